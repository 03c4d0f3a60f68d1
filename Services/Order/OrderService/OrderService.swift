import Contracts
import EventRuntime
import Foundation
import Logging
import Postgres
import ServiceKit

/// The order service: takes orders over HTTP, keeps a copy of the catalogue from inventory's
/// events (and rebuilds it from a snapshot on request), and moves each order to confirmed or
/// cancelled as the saga's events arrive.
public enum OrderService {
    public static func definition(settings: ServiceSettings, orderSettings: OrderSettings) throws -> ServiceDefinition {
        let store = try OrderStore(schema: settings.schema)
        let rebuilds = try CatalogueRebuilds(schema: settings.schema)
        return ServiceDefinition(
            service: .order,
            migrations: try Migrations.load(from: Bundle.module.resourceURL!.appendingPathComponent("Migrations")),
            handlers: OrderHandlers.make(store: store, rebuilds: rebuilds),
            routes: { router, dependencies in
                OrderRoutes(store: store, dependencies: dependencies, settings: orderSettings).add(to: router)
                CatalogueRebuildRoutes(rebuilds: rebuilds, dependencies: dependencies).add(to: router)
            },
            jobs: [{ dependencies in try await sweepOverdueOrders(store: store, settings: orderSettings, dependencies) }])
    }

    /// Cancels pending orders past their deadline (reason `timed_out`), for as long as the service runs.
    static func sweepOverdueOrders(store: OrderStore, settings: OrderSettings, _ dependencies: ServiceDependencies) async throws {
        let outbox = dependencies.outbox
        while !Task.isCancelled {
            do {
                let cancelled = try await dependencies.pool.transaction { tx in
                    try store.overduePending(limit: 100, in: tx).map { order in
                        try OrderTransitions.apply(.deadlinePassed, to: order.orderId, store: store, context: .direct(tx, outbox))
                    }
                }
                for (decision, order) in cancelled { OrderMetrics.record(decision, for: order) }
                if !cancelled.isEmpty { dependencies.logger.info("cancelled \(cancelled.count) order(s) past their deadline") }
            } catch {
                dependencies.logger.warning("deadline sweep failed, trying again: \(error)")
            }
            try await Task.sleep(for: settings.sweepInterval)
        }
    }
}
