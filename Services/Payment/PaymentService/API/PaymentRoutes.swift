import Auth
import Contracts
import Foundation
import Hummingbird
import ServiceKit

/// `GET /accounts/{customerId}`, `PUT /accounts/{customerId}`, `GET /payments?orderId=…`.
struct PaymentRoutes {
    let store: PaymentStore
    let dependencies: ServiceDependencies

    struct AccountBody: ResponseCodable {
        var customerId: String
        var balance: Int
    }

    struct PutAccount: Decodable {
        var balance: Int
    }

    struct PaymentBody: ResponseCodable {
        var paymentId: String
        var orderId: String
        var amount: Int
        var status: PaymentStatus
    }

    func add(to router: Router<BasicRequestContext>) {
        router.get("/accounts/{customerId}", use: showAccount)
        router.put("/accounts/{customerId}", use: putAccount)
        router.get("/payments", use: payments)
        router.refuseOtherMethods(on: "/accounts/{customerId}", allowing: [.get, .put])
        router.refuseOtherMethods(on: "/payments", allowing: [.get])
    }

    /// A customer's own account, or any for an admin; someone else's is "not found".
    @Sendable func showAccount(_ request: Request, context: BasicRequestContext) async throws -> AccountBody {
        let caller = try await dependencies.authenticator.caller(of: request)
        let customerId = context.parameters.get("customerId") ?? "", store = store
        guard !customerId.containsControlCharacters, caller.mayAccess(customer: customerId) else {
            throw Problem.notFound("no account for customer \(customerId)")
        }
        guard let balance = try await dependencies.pool.transaction({ tx in try store.balance(customerId, in: tx) }) else {
            throw Problem.notFound("no account for customer \(customerId)")
        }
        return AccountBody(customerId: customerId, balance: balance)
    }

    /// Admin only.
    @Sendable func putAccount(_ request: Request, context: BasicRequestContext) async throws -> AccountBody {
        try await dependencies.authenticator.requireAdmin(request)
        let customerId = context.parameters.get("customerId") ?? ""
        let body = try await request.decode(as: PutAccount.self, context: context)
        guard (1...128).contains(customerId.utf8.count), !customerId.containsControlCharacters else {
            throw Problem.badRequest("customerId must be 1 to 128 characters, without control characters")
        }
        guard (0...1_000_000_000_000).contains(body.balance) else { throw Problem.badRequest("balance must be 0 to 10^12 (cents)") }
        let store = store
        try await dependencies.pool.transaction { tx in store.setBalance(customerId, body.balance, in: tx) }
        return AccountBody(customerId: customerId, balance: body.balance)
    }

    /// An order's payments: a customer sees only those of their own orders.
    @Sendable func payments(_ request: Request, context: BasicRequestContext) async throws -> [PaymentBody] {
        let caller = try await dependencies.authenticator.caller(of: request)
        guard let text = request.uri.queryParameters.get("orderId"), let orderId = UUID(uuidString: text) else {
            throw Problem.badRequest("the orderId query parameter (a UUID) is required")
        }
        let store = store
        return try await dependencies.pool.transaction { tx in try store.payments(orderId: orderId, in: tx) }
            .filter { caller.mayAccess(customer: $0.customerId) }.map {
            PaymentBody(
                paymentId: $0.paymentId.uuidString.lowercased(), orderId: $0.orderId.uuidString.lowercased(), amount: $0.amount,
                status: $0.status)
        }
    }
}
