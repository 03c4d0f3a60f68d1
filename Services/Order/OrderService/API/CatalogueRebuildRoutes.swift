import Contracts
import Foundation
import Hummingbird
import ServiceKit

/// `POST /catalogue/rebuilds`, `GET /catalogue/rebuilds/{rebuildId}`: rebuild the copy of the
/// catalogue from a snapshot inventory sends (`bazaar replay catalogue`). Admin only.
///
/// Starting a rebuild answers at once (202); the snapshot arrives as events, is staged beside the
/// live copy and swapped in when complete, while orders keep being priced from the live copy.
struct CatalogueRebuildRoutes {
    let rebuilds: CatalogueRebuilds
    let dependencies: ServiceDependencies

    struct RebuildBody: ResponseCodable {
        var rebuildId: String
        var status: CatalogueRebuild.Status
        var expected: Int?
        var received: Int
        var replaced: Int?
        var keptNewer: Int?
        var removed: Int?
        var requestedAt: Date
        var completedAt: Date?
        /// From the request to the swap.
        var durationMs: Int?

        init(_ rebuild: CatalogueRebuild) {
            rebuildId = rebuild.rebuildId.uuidString.lowercased()
            status = rebuild.status
            expected = rebuild.expected
            received = rebuild.received
            replaced = rebuild.replaced
            keptNewer = rebuild.keptNewer
            removed = rebuild.removed
            requestedAt = rebuild.requestedAt
            completedAt = rebuild.completedAt
            durationMs = rebuild.completedAt.map { Int(($0.timeIntervalSince(rebuild.requestedAt) * 1000).rounded()) }
        }
    }

    func add(to router: Router<BasicRequestContext>) {
        router.post("/catalogue/rebuilds", use: start)
        router.get("/catalogue/rebuilds/{rebuildId}", use: show)
        router.refuseOtherMethods(on: "/catalogue/rebuilds", allowing: [.post])
        router.refuseOtherMethods(on: "/catalogue/rebuilds/{rebuildId}", allowing: [.get])
    }

    @Sendable func start(_ request: Request, context: BasicRequestContext) async throws -> EditedResponse<RebuildBody> {
        try await dependencies.authenticator.requireAdmin(request)
        let (rebuilds, outbox) = (rebuilds, dependencies.outbox)
        let rebuild = try await dependencies.pool.transaction { tx in try rebuilds.start(.timeOrdered(), outbox: outbox, in: tx) }
        let location = "/catalogue/rebuilds/\(rebuild.rebuildId.uuidString.lowercased())"
        return EditedResponse(status: .accepted, headers: [.location: location], response: RebuildBody(rebuild))
    }

    @Sendable func show(_ request: Request, context: BasicRequestContext) async throws -> RebuildBody {
        try await dependencies.authenticator.requireAdmin(request)
        guard let text = context.parameters.get("rebuildId"), let rebuildId = UUID(uuidString: text) else {
            throw Problem.notFound("no such rebuild: rebuild ids are UUIDs")
        }
        let rebuilds = rebuilds
        guard let rebuild = try await dependencies.pool.transaction({ tx in try rebuilds.rebuild(rebuildId, in: tx) }) else {
            throw Problem.notFound("no rebuild \(rebuildId.uuidString.lowercased())")
        }
        return RebuildBody(rebuild)
    }
}
