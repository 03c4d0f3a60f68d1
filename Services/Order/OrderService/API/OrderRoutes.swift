import Auth
import Contracts
import EventRuntime
import Foundation
import Hummingbird
import Postgres
import ServiceKit

/// `POST /orders`, `GET /orders/{orderId}`, `GET /orders?customerId=…`, `POST /orders/{orderId}/cancel`.
///
/// Every route needs a bearer token. A customer places, sees and cancels only their own orders;
/// another customer's order is "not found", so order ids reveal nothing. An admin may do all of
/// it for anyone (back office, and the load generator placing for many customers).
struct OrderRoutes {
    let store: OrderStore
    let dependencies: ServiceDependencies
    let settings: OrderSettings

    struct PlaceOrder: Decodable {
        var customerId: String
        var items: [RequestedItem]
    }

    struct OrderBody: ResponseCodable {
        struct Item: Codable {
            var sku: String
            var quantity: Int
            var unitPrice: Int
        }

        var orderId: String
        var customerId: String
        var status: OrderStatus
        var reason: CancellationReason?
        var items: [Item]
        var total: Int
        var createdAt: Date

        init(_ order: StoredOrder) {
            orderId = order.orderId.uuidString.lowercased()
            customerId = order.customerId
            status = order.status
            reason = order.reason
            items = order.lines.map { Item(sku: $0.sku, quantity: $0.quantity, unitPrice: $0.unitPrice) }
            total = order.total
            createdAt = order.createdAt
        }
    }

    func add(to router: Router<BasicRequestContext>) {
        router.post("/orders", use: place)
        router.get("/orders", use: list)
        router.get("/orders/{orderId}", use: show)
        router.post("/orders/{orderId}/cancel", use: cancel)
        router.get("/openapi.json", use: openAPI)
        router.refuseOtherMethods(on: "/orders", allowing: [.get, .post])
        router.refuseOtherMethods(on: "/orders/{orderId}", allowing: [.get])
        router.refuseOtherMethods(on: "/orders/{orderId}/cancel", allowing: [.post])
        router.refuseOtherMethods(on: "/openapi.json", allowing: [.get])
    }

    /// The API's OpenAPI document (`API/openapi.json`, kept beside this file and fuzzed against
    /// the running service by the tests), public like the health routes.
    @Sendable func openAPI(_ request: Request, context: BasicRequestContext) async throws -> Response {
        Response(
            status: .ok, headers: [.contentType: "application/json"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: Self.openAPIDocument)))
    }

    static let openAPIDocument: [UInt8] = {
        guard let url = Bundle.module.url(forResource: "openapi", withExtension: "json"), let data = try? Data(contentsOf: url) else {
            fatalError("the order service's bundle lacks openapi.json")
        }
        return Array(data)
    }()

    @Sendable func place(_ request: Request, context: BasicRequestContext) async throws -> EditedResponse<OrderBody> {
        let caller = try await dependencies.authenticator.caller(of: request)
        let body = try await request.decode(as: PlaceOrder.self, context: context)
        guard caller.mayAccess(customer: body.customerId) else {
            throw Problem(.forbidden, "a customer may place orders only for themselves")
        }
        let idempotencyKey = request.headers.first { $0.name.canonicalName == "idempotency-key" }?.value
        if let idempotencyKey, idempotencyKey.isEmpty || idempotencyKey.unicodeScalars.count > 200 {
            throw Problem.badRequest("Idempotency-Key must be 1 to 200 characters")
        }
        let items: [RequestedItem]
        do {
            items = try OrderPlacement.validate(customerId: body.customerId, items: body.items)
        } catch .tooMuch(let sku) {
            throw Problem.unprocessable(OrderRequestProblem.tooMuch(sku: sku).description)
        } catch {
            throw Problem.badRequest(error.description)
        }
        let (store, outbox, deadline) = (store, dependencies.outbox, settings.pendingDeadline)
        let result: Result<(order: StoredOrder, isNew: Bool), OrderRequestProblem> = try await dependencies.pool.transaction { tx in
            if let idempotencyKey {
                // Two retries racing: the second waits here, then finds the first one's order.
                tx.lock(.orderIdempotency, key: "\(body.customerId.utf8.count):\(body.customerId)\(idempotencyKey)")
                if let existing = try store.order(customerId: body.customerId, idempotencyKey: idempotencyKey, in: tx) {
                    return .success((existing, false))
                }
            }
            let (prices, now) = try store.pricesAndClock(of: items.map(\.sku), in: tx)
            let priced: (lines: [OrderLine], total: Int)
            do throws(OrderRequestProblem) {
                priced = try OrderPlacement.price(items, prices: prices)
            } catch {
                return .failure(error)
            }
            let order = StoredOrder(
                orderId: .timeOrdered(), customerId: body.customerId, status: .pending, reason: nil, lines: priced.lines,
                total: priced.total, createdAt: now)
            store.insert(order, idempotencyKey: idempotencyKey, deadline: deadline, in: tx)
            try outbox.append(
                EventEnvelope(
                    correlationId: order.orderId, causationId: nil,
                    data: OrderPlaced(orderId: order.orderId, customerId: order.customerId, items: order.lines, total: order.total)),
                in: tx)
            return .success((order, true))
        }
        let order: StoredOrder
        switch result {
        case .success(let stored):
            order = stored.order
            if stored.isNew { OrderMetrics.placed() }
        case .failure(let problem): throw Problem.unprocessable(problem.description)
        }
        let location = "/orders/\(order.orderId.uuidString.lowercased())"
        return EditedResponse(status: .accepted, headers: [.location: location], response: OrderBody(order))
    }

    @Sendable func show(_ request: Request, context: BasicRequestContext) async throws -> OrderBody {
        let caller = try await dependencies.authenticator.caller(of: request)
        let orderId = try orderId(context)
        let store = store
        guard let order = try await dependencies.pool.transaction({ tx in try store.order(orderId, in: tx) }),
            caller.mayAccess(customer: order.customerId)
        else {
            throw Problem.notFound("no order \(orderId.uuidString.lowercased())")
        }
        return OrderBody(order)
    }

    /// A customer's orders, newest first: a customer's own (`customerId` may be left out), or
    /// anyone's for an admin.
    @Sendable func list(_ request: Request, context: BasicRequestContext) async throws -> [OrderBody] {
        let caller = try await dependencies.authenticator.caller(of: request)
        var customerId = request.uri.queryParameters.get("customerId").map { String($0) }
        if customerId == nil, case .customer(let own) = caller { customerId = own }
        guard let customerId, !customerId.isEmpty, customerId.unicodeScalars.count <= OrderPlacement.maximumCustomerIdLength,
            !customerId.containsControlCharacters
        else {
            throw Problem.badRequest("the customerId query parameter is required (1 to 128 characters, without control characters)")
        }
        guard caller.mayAccess(customer: customerId) else { throw Problem.notFound("no orders of customer \(customerId)") }
        let store = store
        return try await dependencies.pool.transaction { tx in try store.orders(customerId: customerId, limit: 100, in: tx) }
            .map(OrderBody.init)
    }

    @Sendable func cancel(_ request: Request, context: BasicRequestContext) async throws -> EditedResponse<OrderBody> {
        let caller = try await dependencies.authenticator.caller(of: request)
        let orderId = try orderId(context)
        let (store, outbox) = (store, dependencies.outbox)
        let outcome: (OrderDecision, StoredOrder)? = try await dependencies.pool.transaction { tx in
            guard var order = try store.order(orderId, in: tx), caller.mayAccess(customer: order.customerId) else { return nil }
            let (decision, after) = try OrderTransitions.apply(.customerCancelled, to: orderId, store: store, context: .direct(tx, outbox))
            (order.status, order.reason) = (after.status, after.reason)  // `after` has no lines
            return (decision, order)
        }
        guard let (decision, order) = outcome else { throw Problem.notFound("no order \(orderId.uuidString.lowercased())") }
        if case .refuse(let why) = decision { throw Problem.conflict(why) }
        OrderMetrics.record(decision, for: order)
        return EditedResponse(status: .accepted, response: OrderBody(order))
    }

    private func orderId(_ context: BasicRequestContext) throws -> UUID {
        guard let text = context.parameters.get("orderId"), let id = UUID(uuidString: text) else {
            throw Problem.notFound("no such order: order ids are UUIDs")
        }
        return id
    }
}

