import Auth
import Contracts
import Foundation
import Hummingbird
import ServiceKit

/// `GET /notifications?orderId=…` or `?customerId=…`: a customer sees only their own, an admin
/// anyone's; each with the state of its webhook deliveries.
struct NotificationRoutes {
    let store: NotificationStore
    let webhooks: WebhookStore
    let dependencies: ServiceDependencies

    /// One webhook delivery of a notification.
    struct DeliveryBody: ResponseCodable {
        var deliveryId: String
        var host: String
        /// `pending`, `delivered` or `failed` (after `WEBHOOK_MAX_ATTEMPTS`).
        var state: String
        var attempts: Int
        /// When a pending delivery is due next.
        var nextAttemptAt: Date?
        var lastStatus: Int?
        var lastError: String?
    }

    struct NotificationBody: ResponseCodable {
        var notificationId: String
        var orderId: String
        var customerId: String
        var kind: NotificationKind
        var createdAt: Date
        var deliveries: [DeliveryBody]
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
        let (store, webhooks, order) = (store, webhooks, orderId)
        let (notifications, deliveries) = try await dependencies.pool.transaction { tx in
            let notifications = try store.notifications(orderId: order, customerId: customerId, in: tx)
                .filter { caller.mayAccess(customer: $0.customerId) }
            return (notifications, try webhooks.deliveries(of: notifications.map(\.notificationId), in: tx))
        }
        let byNotification = Dictionary(grouping: deliveries, by: \.notificationId)
        return notifications.map {
            NotificationBody(
                notificationId: $0.notificationId.uuidString.lowercased(), orderId: $0.orderId.uuidString.lowercased(),
                customerId: $0.customerId, kind: $0.kind, createdAt: $0.createdAt,
                deliveries: (byNotification[$0.notificationId] ?? []).map {
                    DeliveryBody(
                        deliveryId: $0.deliveryId.uuidString.lowercased(), host: $0.host, state: $0.state, attempts: $0.attempts,
                        nextAttemptAt: $0.nextAttemptAt, lastStatus: $0.lastStatus, lastError: $0.lastError)
                })
        }
    }
}
