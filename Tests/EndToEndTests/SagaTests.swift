import AMQP
import Foundation
import Postgres
import TestSupport
import Testing

/// Real order flows through the four services, started as processes, over the real broker and
/// database. Each test starts its own system (about two seconds).
@Suite("The order saga, end to end", .serialized, .timeLimit(.minutes(3)))
struct SagaTests {
    @Test func anOrderIsConfirmedChargedAndNotified() async throws {
        try await withSystem { system in
            let shop = Shop(system)
            try await shop.product("MUG-01", price: 1250, stock: 10)
            try await shop.account("alice", balance: 10_000)

            let (status, placed) = try await shop.place("alice", ["MUG-01": 2])
            #expect(status == 202)
            #expect(placed["status"] as? String == "pending")
            #expect(placed["total"] as? Int == 2500)
            let order = try await shop.waitUntilSettled(placed["orderId"] as! String)
            #expect(order["status"] as? String == "confirmed")
            #expect((order["items"] as? [[String: Any]])?.first?["unitPrice"] as? Int == 1250)

            // Inventory and notification react to OrderConfirmed after the order is confirmed.
            try await shop.eventually { try await shop.stock("MUG-01") == Stock(available: 8, reserved: 0) }
            try await shop.eventually { try await shop.notifications(order) == ["order_confirmed"] }
            #expect(try await shop.balance("alice") == 7_500)
            #expect(try await shop.payments(order) == ["captured:2500"])
        }
    }

    @Test func anOrderForMoreThanTheStockIsCancelledAndChargesNothing() async throws {
        try await withSystem { system in
            let shop = Shop(system)
            try await shop.product("TEE-42", price: 2000, stock: 1)
            try await shop.account("alice", balance: 10_000)
            let order = try await shop.waitUntilSettled(try await shop.place("alice", ["TEE-42": 2]).1["orderId"] as! String)
            #expect(order["status"] as? String == "cancelled")
            #expect(order["reason"] as? String == "out_of_stock")
            try await shop.eventually { try await shop.notifications(order) == ["order_cancelled"] }
            #expect(try await shop.stock("TEE-42") == Stock(available: 1, reserved: 0))
            #expect(try await shop.balance("alice") == 10_000)
            #expect(try await shop.payments(order) == [])
        }
    }

    @Test func aDeclinedPaymentCancelsTheOrderAndReleasesTheStock() async throws {
        try await withSystem { system in
            let shop = Shop(system)
            try await shop.product("MUG-01", price: 1250, stock: 10)
            try await shop.account("bob", balance: 100)
            let order = try await shop.waitUntilSettled(try await shop.place("bob", ["MUG-01": 2]).1["orderId"] as! String)
            #expect(order["status"] as? String == "cancelled")
            #expect(order["reason"] as? String == "payment_declined")
            try await shop.eventually { try await shop.stock("MUG-01") == Stock(available: 10, reserved: 0) }
            #expect(try await shop.balance("bob") == 100)
            #expect(try await shop.payments(order) == ["declined:2500"])
        }
    }

    @Test func aCustomerCancellingAConfirmedOrderIsRefundedAndTheStockRestored() async throws {
        try await withSystem { system in
            let shop = Shop(system)
            try await shop.product("MUG-01", price: 1250, stock: 10)
            try await shop.account("alice", balance: 10_000)
            let order = try await shop.waitUntilSettled(try await shop.place("alice", ["MUG-01": 3]).1["orderId"] as! String)
            #expect(order["status"] as? String == "confirmed")
            let id = order["orderId"] as! String

            let (status, cancelled) = try await HTTP.post("\(system.url(.order))/orders/\(id)/cancel", json: nil)
            #expect(status == 202)
            #expect((cancelled as? [String: Any])?["reason"] as? String == "customer_cancelled")

            try await shop.eventually { try await shop.payments(order) == ["refunded:3750"] }
            #expect(try await shop.balance("alice") == 10_000)
            try await shop.eventually { try await shop.stock("MUG-01") == Stock(available: 10, reserved: 0) }
            try await shop.eventually {
                try await shop.notifications(order).sorted() == ["order_cancelled", "order_confirmed", "payment_refunded"]
            }
            let (again, problem) = try await HTTP.post("\(system.url(.order))/orders/\(id)/cancel", json: nil)
            #expect(again == 409)
            #expect((problem as? [String: Any])?["detail"] as? String == "the order is already cancelled")
        }
    }

    @Test func aMessageDeliveredTwiceHasOneEffect() async throws {
        try await withSystem { system in
            let shop = Shop(system)
            try await shop.product("MUG-01", price: 1250, stock: 10)
            try await shop.account("alice", balance: 10_000)
            let order = try await shop.waitUntilSettled(try await shop.place("alice", ["MUG-01": 2]).1["orderId"] as! String)
            #expect(order["status"] as? String == "confirmed")
            try await shop.eventually { try await shop.notifications(order).count == 1 }

            // Copies of real messages, straight to the broker, as a relay that crashed before
            // marking them published would send them again.
            let orderId = UUID(uuidString: order["orderId"] as! String)!
            let connection = try await AMQPConnection.connect(try AMQPConfiguration(url: system.vhost.amqpURL), logger: .init(label: "e2e"))
            for (service, type, exchange, routingKey) in [
                (RunningSystem.Service.order, "OrderPlaced", "orders", "order.placed.v1"),
                (.inventory, "StockReserved", "inventory", "stock.reserved.v1"),
                (.payment, "PaymentCaptured", "payments", "payment.captured.v1"),
                (.order, "OrderConfirmed", "orders", "order.confirmed.v1"),
            ] {
                let row = try #require(
                    try await system.pool.query(
                        "SELECT event_id, payload::text AS payload FROM \(system.schema(service)).outbox WHERE correlation_id = $1 AND event_type = $2",
                        orderId, type
                    ).first)
                try await connection.publish(
                    OutgoingMessage(
                        exchange: exchange, routingKey: routingKey, body: Array(try row.decode(String.self, column: "payload").utf8),
                        properties: AMQPProperties(
                            contentType: "application/json", messageId: try row.decode(UUID.self, column: "event_id").uuidString.lowercased(),
                            type: type, userId: connection.user)))
            }
            await connection.close()
            // Every copy reaches its consumers (OrderConfirmed has two), is found in the inbox, and
            // is acked without effect; the metrics count them as duplicates.
            try await shop.eventually {
                RunningSystem.Service.allCases.map { system.log(of: $0).components(separatedBy: "duplicate, skipped").count - 1 }
                    .reduce(0, +) >= 5
            }
            let duplicates = try await Scrape.all(system).values.flatMap { scrape in
                scrape.series.filter { $0.key.hasPrefix("bazaar_messages_consumed_total{") && $0.key.contains(#"outcome="duplicate""#) }
                    .values
            }
            #expect(duplicates.reduce(0, +) == 5)
            #expect(try await shop.stock("MUG-01") == Stock(available: 8, reserved: 0))
            #expect(try await shop.balance("alice") == 7_500)
            #expect(try await shop.payments(order) == ["captured:2500"])
            #expect(try await shop.notifications(order) == ["order_confirmed"])
            #expect(try await shop.order(orderId.uuidString)["status"] as? String == "confirmed")
        }
    }

    @Test func manyOrdersRaceForTheLastUnitsAndExactlyThatManyWin() async throws {
        try await withSystem { system in
            try await Self.raceForTheLastUnits(Shop(system), orders: 12, units: 3)
        }
    }

    @Test func twoInstancesOfEveryServiceShareTheWorkWithTheSameGuarantees() async throws {
        try await withSystem { system in
            try await system.start(instance: 2)
            try await Self.raceForTheLastUnits(Shop(system), orders: 16, units: 5)
        }
    }

    @Test func anOrderStillPendingAtItsDeadlineTimesOutAndLateRepliesAreCompensated() async throws {
        try await withSystem(environment: ["ORDER_PENDING_TIMEOUT_SECONDS": "2"]) { system in
            let shop = Shop(system)
            try await shop.product("MUG-01", price: 1250, stock: 10)
            try await shop.account("alice", balance: 10_000)
            // Inventory is down: the order can't get past pending.
            system.stop(.inventory)
            let id = try await shop.place("alice", ["MUG-01": 1]).1["orderId"] as! String
            let order = try await shop.waitUntilSettled(id)
            #expect(order["status"] as? String == "cancelled")
            #expect(order["reason"] as? String == "timed_out")

            // Inventory comes back and works through OrderPlaced, then OrderCancelled: it
            // reserves, then releases; payment had seen the cancellation and charges nothing.
            try await system.start([.inventory])
            try await shop.eventually { try await shop.stock("MUG-01") == Stock(available: 10, reserved: 0) }
            // Payment has seen the late StockReserved (it is in its inbox) and charged nothing.
            try await shop.eventually {
                try await system.pool.query(
                    "SELECT 1 FROM \(system.schema(.payment)).inbox WHERE correlation_id = $1 AND event_type = 'StockReserved'",
                    UUID(uuidString: id)!
                ).count == 1
            }
            #expect(try await shop.payments(order) == [])
            #expect(try await shop.balance("alice") == 10_000)
            #expect(try await shop.order(id)["status"] as? String == "cancelled")
        }
    }

    @Test func badInputIsAnsweredWithAProblemAndChangesNothing() async throws {
        try await withSystem { system in
            let shop = Shop(system)
            try await shop.product("MUG-01", price: 1250, stock: 10)
            let orders = "\(system.url(.order))/orders"
            let cases: [(String, Data, Int)] = [
                ("malformed JSON", Data(#"{"customerId": "alice", "items": ["#.utf8), 400),
                ("missing items", Data(#"{"customerId": "alice"}"#.utf8), 400),
                ("no items", Data(#"{"customerId": "alice", "items": []}"#.utf8), 400),
                ("zero quantity", Data(#"{"customerId": "alice", "items": [{"sku": "MUG-01", "quantity": 0}]}"#.utf8), 400),
                ("negative quantity", Data(#"{"customerId": "alice", "items": [{"sku": "MUG-01", "quantity": -1}]}"#.utf8), 400),
                ("unknown sku", Data(#"{"customerId": "alice", "items": [{"sku": "NOPE-1", "quantity": 1}]}"#.utf8), 422),
                ("empty customer", Data(#"{"customerId": "", "items": [{"sku": "MUG-01", "quantity": 1}]}"#.utf8), 400),
            ]
            for (name, body, expected) in cases {
                let (status, contentType, json) = try await HTTP.exchange("POST", orders, body: body)
                #expect(status == expected, "\(name)")
                #expect(contentType == "application/problem+json", "\(name)")
                #expect((json as? [String: Any])?["status"] as? Int == expected, "\(name)")
                #expect(((json as? [String: Any])?["detail"] as? String)?.isEmpty == false, "\(name)")
            }
            for path in ["/orders/not-a-uuid", "/orders/\(UUID())", "/no/such/route"] {
                let (status, contentType, _) = try await HTTP.exchange("GET", system.url(.order) + path, body: nil)
                #expect(status == 404, "\(path)")
                #expect(contentType == "application/problem+json", "\(path)")
            }
            #expect(try await HTTP.post("\(orders)/\(UUID())/cancel", json: nil).0 == 404)
            #expect(try await HTTP.put("\(system.url(.inventory))/products/MUG-01", json: ["name": "x", "price": -1, "stock": 1]).0 == 400)
            #expect(try await HTTP.put("\(system.url(.payment))/accounts/alice", json: ["balance": "lots"]).0 == 400)

            // Nothing was written: no order, no event.
            #expect(try await system.pool.query("SELECT count(*) FROM \(system.schema(.order)).orders").first!.decode(Int.self, at: 0) == 0)
            #expect(try await system.pool.query("SELECT count(*) FROM \(system.schema(.order)).outbox").first!.decode(Int.self, at: 0) == 0)
            #expect(try await shop.stock("MUG-01") == Stock(available: 10, reserved: 0))
        }
    }

    @Test func aRetriedPostWithTheSameIdempotencyKeyReturnsTheSameOrder() async throws {
        try await withSystem { system in
            let shop = Shop(system)
            try await shop.product("MUG-01", price: 1250, stock: 10)
            try await shop.account("alice", balance: 10_000)
            let body: [String: Any] = ["customerId": "alice", "items": [["sku": "MUG-01", "quantity": 1]]]
            let first = try await HTTP.post("\(system.url(.order))/orders", json: body, headers: ["Idempotency-Key": "k-1"])
            let second = try await HTTP.post("\(system.url(.order))/orders", json: body, headers: ["Idempotency-Key": "k-1"])
            #expect(first.0 == 202 && second.0 == 202)
            let id = (first.1 as? [String: Any])?["orderId"] as? String
            #expect(id != nil && id == (second.1 as? [String: Any])?["orderId"] as? String)
            let (_, list) = try await HTTP.get("\(system.url(.order))/orders?customerId=alice")
            #expect((list as? [Any])?.count == 1)
            _ = try await shop.waitUntilSettled(id!)
            try await shop.eventually { try await shop.stock("MUG-01") == Stock(available: 9, reserved: 0) }
        }
    }

    @Test func withJSONLogsOneOrderCanBeFollowedByItsIdAcrossTheServices() async throws {
        try await withSystem(environment: ["LOG_FORMAT": "json"]) { system in
            let shop = Shop(system)
            try await shop.product("MUG-01", price: 1250, stock: 10)
            try await shop.account("alice", balance: 10_000)
            let order = try await shop.waitUntilSettled(try await shop.place("alice", ["MUG-01": 1]).1["orderId"] as! String)
            let id = order["orderId"] as! String
            try await shop.eventually { try await shop.notifications(order) == ["order_confirmed"] }

            // Every line is one JSON object with the fixed fields.
            for service in RunningSystem.Service.allCases {
                for line in system.log(of: service).split(separator: "\n") {
                    let record = try #require(
                        try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "not JSON: \(line)")
                    #expect(record["ts"] is String && record["level"] is String && record["message"] is String)
                }
            }
            // Grep the order's id: what each service published and handled for it. (The last
            // lines may still be on their way: the relays publish after the commits.)
            let expected = (
                handled: [
                    "inventory": ["OrderPlaced", "OrderConfirmed"], "payment": ["StockReserved"],
                    "order": ["PaymentCaptured"], "notification": ["OrderConfirmed"],
                ],
                published: [
                    "order": ["OrderPlaced", "OrderConfirmed"], "inventory": ["StockReserved"],
                    "payment": ["PaymentCaptured"], "notification": ["NotificationSent"],
                ])
            try await shop.eventually {
                var handled: [String: [String]] = [:], published: [String: [String]] = [:]
                for service in RunningSystem.Service.allCases {
                    for line in system.log(of: service).split(separator: "\n") {
                        guard let record = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                            record["orderId"] as? String == id, let type = record["eventType"] as? String
                        else { continue }
                        if record["message"] as? String == "handled" { handled[service.rawValue, default: []].append(type) }
                        if record["message"] as? String == "published" { published[service.rawValue, default: []].append(type) }
                    }
                }
                return handled == expected.handled && published == expected.published
            }
        }
    }

    enum Dependency: String, CaseIterable, Sendable { case broker, database }

    @Test(arguments: Dependency.allCases)
    func readinessTurnsFalseWhileADependencyHangsAndTrueAfterwards(_ hung: Dependency) async throws {
        let system = try await RunningSystem()
        let proxy: TCPProxy
        switch hung {
        case .broker:
            var direct = try #require(URLComponents(string: system.vhost.amqpURL))
            proxy = try TCPProxy(upstreamPort: direct.port!)
            direct.port = proxy.port
            direct.query = "heartbeat=1"  // notice a silent broker within seconds
            system.amqpURLOverride = direct.string
        case .database:
            var database = try #require(URLComponents(string: try StackEnvironment.databaseURL))
            proxy = try TCPProxy(upstreamPort: database.port!)
            database.port = proxy.port
            system.extraEnvironment = ["DATABASE_URL": database.string!]
        }
        defer { proxy.stop() }
        do {
            try await system.start([.payment])
            let ready = "\(system.url(.payment))/health/ready"
            #expect(try await HTTP.get(ready).0 == 200)

            proxy.freeze()  // it goes silent: no error, no close
            try await Shop(system).eventually { try await HTTP.get(ready).0 == 503 }
            let (_, report) = try await HTTP.get(ready)
            let other = hung == .broker ? "database" : "broker.consumer"
            #expect(((report as? [String: Any])?["checks"] as? [String: String])?[other] == "ok")
            #expect(try await HTTP.get("\(system.url(.payment))/health/live").0 == 200)

            proxy.thaw()
            try await Shop(system).eventually(within: .seconds(40)) { try await HTTP.get(ready).0 == 200 }
        } catch {
            await system.tearDown()
            throw error
        }
        await system.tearDown()
    }

    @Test func whileTheDatabaseIsUnreachableRequestsAreAnswered503() async throws {
        let system = try await RunningSystem()
        var database = try #require(URLComponents(string: try StackEnvironment.databaseURL))
        let proxy = try TCPProxy(upstreamPort: database.port!)
        defer { proxy.stop() }
        database.port = proxy.port
        system.extraEnvironment = ["DATABASE_URL": database.string!]
        do {
            try await system.start([.order])
            proxy.stop()  // every database connection closes; new ones are refused
            let body = Data(#"{"customerId":"alice","items":[{"sku":"MUG-01","quantity":1}]}"#.utf8)
            let (status, contentType, json) = try await HTTP.exchange(
                "POST", "\(system.url(.order))/orders", body: body, as: .customer("alice"))
            #expect(status == 503, "\((json as? [String: Any])?["detail"] ?? "")")
            #expect(contentType == "application/problem+json")
        } catch {
            await system.tearDown()
            throw error
        }
        await system.tearDown()
    }

    // MARK: Shared scenario

    /// `orders` customers order one unit each, all at once, of a product with `units` in stock.
    static func raceForTheLastUnits(_ shop: Shop, orders: Int, units: Int) async throws {
        try await shop.product("LAMP-3", price: 4500, stock: units)
        for customer in 1...orders { try await shop.account("c\(customer)", balance: 100_000) }
        let ids = try await withThrowingTaskGroup(of: String.self) { group in
            for customer in 1...orders {
                group.addTask {
                    let (status, body) = try await shop.place("c\(customer)", ["LAMP-3": 1])
                    guard status == 202, let id = body["orderId"] as? String else { throw SystemError("POST /orders answered \(status)") }
                    return id
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        var outcomes: [String: Int] = [:]
        for id in ids {
            let order = try await shop.waitUntilSettled(id)
            outcomes["\(order["status"]!)/\(order["reason"] ?? "-")", default: 0] += 1
        }
        #expect(outcomes == ["confirmed/-": units, "cancelled/out_of_stock": orders - units])
        try await shop.eventually { try await shop.stock("LAMP-3") == Stock(available: 0, reserved: 0) }
        let charged = try await shop.system.pool.query(
            "SELECT count(*) FROM \(shop.system.schema(.payment)).payments WHERE status = 'captured'").first!.decode(Int.self, at: 0)
        #expect(charged == units)
    }
}

struct Stock: Equatable {
    var available: Int
    var reserved: Int
}

/// The shop as its users see it: products, accounts and orders over the services' HTTP APIs.
struct Shop: Sendable {
    let system: RunningSystem

    init(_ system: RunningSystem) {
        self.system = system
    }

    /// Creates a product and waits until the order service's catalogue has it.
    func product(_ sku: String, price: Int, stock: Int) async throws {
        let (status, _) = try await HTTP.put("\(system.url(.inventory))/products/\(sku)", json: ["name": sku, "price": price, "stock": stock])
        guard status == 200 else { throw SystemError("PUT /products/\(sku) answered \(status)") }
        try await eventually {
            try await system.pool.query("SELECT 1 FROM \(system.schema(.order)).catalogue WHERE sku = $1 AND price = $2", sku, price)
                .count == 1
        }
    }

    func account(_ customer: String, balance: Int) async throws {
        let (status, _) = try await HTTP.put("\(system.url(.payment))/accounts/\(customer)", json: ["balance": balance])
        guard status == 200 else { throw SystemError("PUT /accounts/\(customer) answered \(status)") }
    }

    /// Places an order as the customer would, with the customer's own token.
    func place(_ customer: String, _ items: [String: Int]) async throws -> (Int, [String: Any]) {
        let (status, json) = try await HTTP.post(
            "\(system.url(.order))/orders",
            json: ["customerId": customer, "items": items.map { ["sku": $0.key, "quantity": $0.value] }], as: .customer(customer))
        return (status, json as? [String: Any] ?? [:])
    }

    func order(_ id: String) async throws -> [String: Any] {
        let (status, json) = try await HTTP.get("\(system.url(.order))/orders/\(id)")
        guard status == 200, let order = json as? [String: Any] else { throw SystemError("GET /orders/\(id) answered \(status)") }
        return order
    }

    /// Waits until the order is confirmed or cancelled, and returns it.
    func waitUntilSettled(_ id: String) async throws -> [String: Any] {
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline {
            let order = try await order(id)
            if order["status"] as? String != "pending" { return order }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw SystemError("order \(id) still pending after 20 s")
    }

    func stock(_ sku: String) async throws -> Stock {
        let (_, json) = try await HTTP.get("\(system.url(.inventory))/products/\(sku)")
        let product = json as? [String: Any] ?? [:]
        return Stock(available: product["available"] as? Int ?? -1, reserved: product["reserved"] as? Int ?? -1)
    }

    func balance(_ customer: String) async throws -> Int? {
        (try await HTTP.get("\(system.url(.payment))/accounts/\(customer)").1 as? [String: Any])?["balance"] as? Int
    }

    /// `status:amount` of each payment of the order.
    func payments(_ order: [String: Any]) async throws -> [String] {
        let (_, json) = try await HTTP.get("\(system.url(.payment))/payments?orderId=\(order["orderId"]!)")
        return (json as? [[String: Any]] ?? []).map { "\($0["status"]!):\($0["amount"]!)" }
    }

    /// The kinds of the order's notifications.
    func notifications(_ order: [String: Any]) async throws -> [String] {
        let (_, json) = try await HTTP.get("\(system.url(.notification))/notifications?orderId=\(order["orderId"]!)")
        return (json as? [[String: Any]] ?? []).compactMap { $0["kind"] as? String }
    }

    /// Polls `condition` for up to 15 s (or `limit`): the saga settles asynchronously.
    func eventually(within limit: Duration = .seconds(15), _ condition: () async throws -> Bool) async throws {
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        if try await condition() { return }
        throw SystemError("condition not met within \(limit)")
    }
}
