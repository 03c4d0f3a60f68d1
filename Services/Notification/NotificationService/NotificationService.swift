import Foundation
import Postgres
import ServiceKit

/// The notification service: records one notification per order confirmation, cancellation and
/// refund, for the customer to read, and delivers each to the customer's webhook, if any.
public enum NotificationService {
    public static func definition(
        settings: ServiceSettings, notificationSettings: NotificationSettings
    ) throws -> ServiceDefinition {
        let store = try NotificationStore(schema: settings.schema)
        let webhooks = try WebhookStore(schema: settings.schema)
        return ServiceDefinition(
            service: .notification,
            migrations: try Migrations.load(from: Bundle.module.resourceURL!.appendingPathComponent("Migrations")),
            handlers: NotificationHandlers.make(store: store, webhooks: webhooks),
            routes: { router, dependencies in
                NotificationRoutes(store: store, webhooks: webhooks, dependencies: dependencies).add(to: router)
                WebhookRoutes(store: webhooks, settings: notificationSettings, dependencies: dependencies).add(to: router)
            },
            jobs: [
                { dependencies in
                    try await WebhookDeliveryWorker(
                        store: webhooks, settings: notificationSettings, pool: dependencies.pool, logger: dependencies.logger
                    ).run()
                }
            ])
    }
}
