import Auth
import Contracts
import Foundation
import Hummingbird
import ServiceKit

/// `GET /notifications?orderId=…` or `?customerId=…`: a customer sees only their own, an admin
/// anyone's.
struct NotificationRoutes {
    let store: NotificationStore
    let dependencies: ServiceDependencies

    struct NotificationBody: ResponseCodable {
        var notificationId: String
        var orderId: String
        var customerId: String
        var kind: NotificationKind
        var createdAt: Date
    }

    func add(to router: Router<BasicRequestContext>) {
        router.get("/notifications", use: list)
        router.refuseOtherMethods(on: "/notifications", allowing: [.get])
    }

    @Sendable func list(_ request: Request, context: BasicRequestContext) async throws -> [NotificationBody] {
        let caller = try await dependencies.authenticator.caller(of: request)
        let orderText = request.uri.queryParameters.get("orderId")
        let customerId = request.uri.queryParameters.get("customerId").map { String($0) }
        guard orderText != nil || customerId != nil else {
            throw Problem.badRequest("give orderId or customerId as a query parameter")
        }
        if let customerId, customerId.containsControlCharacters {
            throw Problem.badRequest("customerId must not contain control characters")
        }
        var orderId: UUID?
        if let orderText {
            guard let id = UUID(uuidString: orderText) else { throw Problem.badRequest("orderId must be a UUID") }
            orderId = id
        }
        let (store, order) = (store, orderId)
        return try await dependencies.pool.transaction { tx in
            try store.notifications(orderId: order, customerId: customerId, in: tx)
        }.filter { caller.mayAccess(customer: $0.customerId) }.map {
            NotificationBody(
                notificationId: $0.notificationId.uuidString.lowercased(), orderId: $0.orderId.uuidString.lowercased(),
                customerId: $0.customerId, kind: $0.kind, createdAt: $0.createdAt)
        }
    }
}
