import Auth
import Contracts
import Foundation
import Hummingbird
import ServiceKit

/// `PUT`, `GET` and `DELETE /webhooks/{customerId}`: a customer's webhook, registered by the
/// customer or an admin (another customer's answers 404).
///
/// `PUT` takes `{"url": "https://…"}`, checks it (http or https, no credentials, no loopback or
/// private address unless `WEBHOOK_ALLOW_PRIVATE_TARGETS`), and answers with a new signing secret:
/// the only time it is shown. Putting again replaces the URL and rotates the secret.
struct WebhookRoutes {
    let store: WebhookStore
    let settings: NotificationSettings
    let dependencies: ServiceDependencies

    struct PutWebhook: Decodable {
        var url: String
    }

    struct WebhookBody: ResponseCodable {
        var customerId: String
        var url: String
        /// Only in the answer to a `PUT`.
        var secret: String?
        var createdAt: Date
        var updatedAt: Date
    }

    func add(to router: Router<BasicRequestContext>) {
        router.put("/webhooks/{customerId}", use: put)
        router.get("/webhooks/{customerId}", use: show)
        router.delete("/webhooks/{customerId}", use: delete)
        router.refuseOtherMethods(on: "/webhooks/{customerId}", allowing: [.get, .put, .delete])
    }

    @Sendable func put(_ request: Request, context: BasicRequestContext) async throws -> WebhookBody {
        let customerId = try await customer(of: request, context)
        guard (1...128).contains(customerId.utf8.count) else { throw Problem.badRequest("customerId must be 1 to 128 characters") }
        let body = try await request.decode(as: PutWebhook.self, context: context)
        let target: WebhookTarget
        do {
            target = try WebhookTarget(body.url, allowPrivateTargets: settings.allowPrivateTargets)
        } catch let refused as WebhookTarget.Refused {
            throw Problem.unprocessable("url: \(refused.reason)")
        }
        let (store, secret) = (store, WebhookSignature.newSecret())
        let webhook = try await dependencies.pool.transaction { tx in
            try store.put(customerId: customerId, target: target, secret: secret, in: tx)
        }
        return WebhookBody(
            customerId: customerId, url: webhook.url, secret: secret, createdAt: webhook.createdAt, updatedAt: webhook.updatedAt)
    }

    @Sendable func show(_ request: Request, context: BasicRequestContext) async throws -> WebhookBody {
        let customerId = try await customer(of: request, context), store = store
        guard let webhook = try await dependencies.pool.transaction({ tx in try store.webhook(customerId: customerId, in: tx) })
        else { throw Problem.notFound("no webhook for customer \(customerId)") }
        return WebhookBody(
            customerId: customerId, url: webhook.url, secret: nil, createdAt: webhook.createdAt, updatedAt: webhook.updatedAt)
    }

    /// Removes the webhook; deliveries still pending for it end `failed`.
    @Sendable func delete(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let customerId = try await customer(of: request, context), store = store
        guard try await dependencies.pool.transaction({ tx in try store.delete(customerId: customerId, in: tx) }) else {
            throw Problem.notFound("no webhook for customer \(customerId)")
        }
        return Response(status: .noContent)
    }

    /// The path's customer, if the caller may act for them; 404 otherwise, so ids don't leak.
    private func customer(of request: Request, _ context: BasicRequestContext) async throws -> String {
        let caller = try await dependencies.authenticator.caller(of: request)
        let customerId = context.parameters.get("customerId") ?? ""
        guard !customerId.containsControlCharacters, caller.mayAccess(customer: customerId) else {
            throw Problem.notFound("no webhook for customer \(customerId)")
        }
        return customerId
    }
}
