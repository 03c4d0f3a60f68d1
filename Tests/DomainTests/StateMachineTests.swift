import Contracts
import EventRuntime
import InventoryService
import NotificationService
import OrderService
import PaymentService
import ServiceKit
import Testing

@Suite("Order state machine")
struct OrderStateMachineTests {
    @Test(arguments: [
        (OrderStatus.pending, OrderInput.paymentCaptured, OrderDecision.confirm),
        (.pending, .stockRejected, .cancel(.outOfStock)),
        (.pending, .paymentDeclined, .cancel(.paymentDeclined)),
        (.pending, .customerCancelled, .cancel(.customerCancelled)),
        (.pending, .deadlinePassed, .cancel(.timedOut)),
        (.confirmed, .customerCancelled, .cancel(.customerCancelled)),
        (.confirmed, .paymentCaptured, .ignore),
        (.confirmed, .deadlinePassed, .ignore),
        (.confirmed, .stockRejected, .ignore),
        // Races: a late capture or rejection for a cancelled order changes nothing here.
        (.cancelled, .paymentCaptured, .ignore),
        (.cancelled, .stockRejected, .ignore),
        (.cancelled, .paymentDeclined, .ignore),
        (.cancelled, .deadlinePassed, .ignore),
        (.cancelled, .customerCancelled, .refuse("the order is already cancelled")),
    ])
    func everyTransition(status: OrderStatus, input: OrderInput, expected: OrderDecision) {
        #expect(OrderStateMachine.decide(status, input) == expected)
    }
}

@Suite("Order placement")
struct OrderPlacementTests {
    @Test func repeatedSkusAreMergedAndPriced() throws {
        let items = try OrderPlacement.validate(
            customerId: "alice", items: [RequestedItem(sku: "MUG-01", quantity: 2), RequestedItem(sku: "MUG-01", quantity: 1)])
        #expect(items == [RequestedItem(sku: "MUG-01", quantity: 3)])
        let priced = try OrderPlacement.price(items, prices: ["MUG-01": 1250])
        #expect(priced.total == 3750)
        #expect(priced.lines == [OrderLine(sku: "MUG-01", quantity: 3, unitPrice: 1250)])
    }

    @Test(arguments: [
        ("", [RequestedItem(sku: "A", quantity: 1)]),
        ("alice", []),
        ("alice", [RequestedItem(sku: "A", quantity: 0)]),
        ("alice", [RequestedItem(sku: "A", quantity: -3)]),
        ("alice", [RequestedItem(sku: "A", quantity: 1001)]),
        ("alice", [RequestedItem(sku: "no spaces", quantity: 1)]),
        ("alice", [RequestedItem(sku: "A,B", quantity: 1)]),
    ])
    func invalidRequestsAreRefused(customerId: String, items: [RequestedItem]) {
        #expect(throws: OrderRequestProblem.self) { try OrderPlacement.validate(customerId: customerId, items: items) }
    }

    @Test func linesOfOneSkuThatAddUpToMoreThanALineMayHoldAreTooMuch() {
        #expect(throws: OrderRequestProblem.tooMuch(sku: "A")) {
            try OrderPlacement.validate(
                customerId: "alice", items: [RequestedItem(sku: "A", quantity: 600), RequestedItem(sku: "A", quantity: 401)])
        }
    }

    @Test func anOrderHasAtMostAHundredLines() throws {
        let lines = (1...101).map { RequestedItem(sku: "SKU-\($0)", quantity: 1) }
        #expect(throws: OrderRequestProblem.self) { try OrderPlacement.validate(customerId: "alice", items: lines) }
        #expect(try OrderPlacement.validate(customerId: "alice", items: Array(lines.prefix(100))).count == 100)
    }

    @Test func unknownSkusAreNamed() {
        #expect(throws: OrderRequestProblem.unknownSkus(["B"])) {
            try OrderPlacement.price([RequestedItem(sku: "A", quantity: 1), RequestedItem(sku: "B", quantity: 1)], prices: ["A": 1])
        }
    }
}

@Suite("Inventory reservation rules")
struct ReservationRulesTests {
    let lines = [StockLine(sku: "A", quantity: 2), StockLine(sku: "B", quantity: 1)]

    @Test func allLinesOrNone() {
        #expect(ReservationRules.onPlaced(nil, lines: lines, available: ["A": 2, "B": 5]) == .reserve)
        #expect(ReservationRules.onPlaced(nil, lines: lines, available: ["A": 1, "B": 5]) == .reject(skus: ["A"]))
        #expect(ReservationRules.onPlaced(nil, lines: lines, available: ["A": 9]) == .reject(skus: ["B"]))
    }

    @Test func aPlacedOrderSeenAgainOrAlreadyCancelledReservesNothing() {
        for status in [ReservationStatus.reserved, .sold, .released, .rejected, .cancelledBeforePlaced] {
            #expect(ReservationRules.onPlaced(status, lines: lines, available: ["A": 9, "B": 9]) == .ignore)
        }
    }

    @Test func confirmationSellsOnlyAReservation() {
        #expect(ReservationRules.onConfirmed(.reserved) == .sell)
        for status in [nil, ReservationStatus.sold, .released, .rejected, .cancelledBeforePlaced] {
            #expect(ReservationRules.onConfirmed(status) == .ignore)
        }
    }

    @Test func cancellationPutsBackOrRemembers() {
        #expect(ReservationRules.onCancelled(.reserved) == .putBack(from: .reserved))
        #expect(ReservationRules.onCancelled(.sold) == .putBack(from: .sold))
        #expect(ReservationRules.onCancelled(nil) == .recordCancellation)
        for status in [ReservationStatus.released, .rejected, .cancelledBeforePlaced] {
            #expect(ReservationRules.onCancelled(status) == .ignore)
        }
    }
}

@Suite("Payment rules")
struct PaymentRulesTests {
    @Test func chargesWhatTheBalanceCovers() {
        #expect(PaymentRules.onStockReserved(payment: nil, cancelled: false, balance: 100, amount: 100) == .capture)
        #expect(PaymentRules.onStockReserved(payment: nil, cancelled: false, balance: 99, amount: 100) == .decline(reason: "insufficient_funds"))
        #expect(PaymentRules.onStockReserved(payment: nil, cancelled: false, balance: nil, amount: 1) == .decline(reason: "unknown_account"))
    }

    @Test func neverChargesTwiceNorACancelledOrder() {
        for payment in [PaymentStatus.captured, .refunded, .declined] {
            #expect(PaymentRules.onStockReserved(payment: payment, cancelled: false, balance: 1_000, amount: 1) == .ignore)
        }
        #expect(PaymentRules.onStockReserved(payment: nil, cancelled: true, balance: 1_000, amount: 1) == .ignore)
    }

    @Test func cancellationRefundsACaptureOrRemembers() {
        #expect(PaymentRules.onOrderCancelled(payment: .captured, cancelled: false) == .refund)
        #expect(PaymentRules.onOrderCancelled(payment: nil, cancelled: false) == .recordCancellation)
        #expect(PaymentRules.onOrderCancelled(payment: nil, cancelled: true) == .ignore)
        #expect(PaymentRules.onOrderCancelled(payment: .refunded, cancelled: false) == .ignore)
        #expect(PaymentRules.onOrderCancelled(payment: .declined, cancelled: false) == .ignore)
    }
}

@Suite("Handlers and the event catalogue")
struct HandlerCatalogueTests {
    /// The queues every service declares come from the catalogue: a handler the catalogue doesn't
    /// list would never get its events, and a listed event without a handler would be dead-lettered.
    @Test func eachServiceHandlesExactlyWhatTheCatalogueSaysItConsumes() throws {
        let definitions = [
            try OrderService.definition(settings: try ServiceSettings(service: .order, environment: ["AUTH_JWT_SECRET": String(repeating: "k", count: 32)]), orderSettings: try OrderSettings(environment: [:])),
            try InventoryService.definition(settings: try ServiceSettings(service: .inventory, environment: ["AUTH_JWT_SECRET": String(repeating: "k", count: 32)])),
            try PaymentService.definition(settings: try ServiceSettings(service: .payment, environment: ["AUTH_JWT_SECRET": String(repeating: "k", count: 32)])),
            try NotificationService.definition(settings: try ServiceSettings(service: .notification, environment: ["AUTH_JWT_SECRET": String(repeating: "k", count: 32)]), notificationSettings: try NotificationSettings(environment: [:])),
        ]
        for definition in definitions {
            let catalogued = Set(EventCatalogue.subscriptions[definition.service, default: []].map { EventKey($0) })
            #expect(Set(definition.handlers.events) == catalogued, "\(definition.service)")
        }
    }
}
