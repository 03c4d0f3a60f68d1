import Foundation
import Postgres
import ServiceKit

/// The inventory service: owns products and their stock, reserves stock for orders all-or-none,
/// and tells the others about product changes (ProductUpdated).
public enum InventoryService {
    public static func definition(settings: ServiceSettings) throws -> ServiceDefinition {
        let store = try InventoryStore(schema: settings.schema)
        return ServiceDefinition(
            service: .inventory,
            migrations: try Migrations.load(from: Bundle.module.resourceURL!.appendingPathComponent("Migrations")),
            handlers: InventoryHandlers.make(store: store),
            routes: { router, dependencies in InventoryRoutes(store: store, dependencies: dependencies).add(to: router) })
    }
}
