import Foundation
import Postgres
import ServiceKit

/// The notification service: records one notification per order confirmation, cancellation and
/// refund, for the customer to read.
public enum NotificationService {
    public static func definition(settings: ServiceSettings) throws -> ServiceDefinition {
        let store = try NotificationStore(schema: settings.schema)
        return ServiceDefinition(
            service: .notification,
            migrations: try Migrations.load(from: Bundle.module.resourceURL!.appendingPathComponent("Migrations")),
            handlers: NotificationHandlers.make(store: store),
            routes: { router, dependencies in NotificationRoutes(store: store, dependencies: dependencies).add(to: router) })
    }
}
