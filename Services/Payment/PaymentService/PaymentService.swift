import Foundation
import Postgres
import ServiceKit

/// The payment service: holds customers' balances, charges orders whose stock is reserved, and
/// refunds the charges of cancelled orders.
public enum PaymentService {
    public static func definition(settings: ServiceSettings) throws -> ServiceDefinition {
        let store = try PaymentStore(schema: settings.schema)
        return ServiceDefinition(
            service: .payment,
            migrations: try Migrations.load(from: Bundle.module.resourceURL!.appendingPathComponent("Migrations")),
            handlers: PaymentHandlers.make(store: store),
            routes: { router, dependencies in PaymentRoutes(store: store, dependencies: dependencies).add(to: router) })
    }
}
