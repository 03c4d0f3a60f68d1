import Foundation
import OrderService
import Testing

@Suite("Swapping a catalogue snapshot into the live copy")
struct CatalogueSwapTests {
    let requestedAt = Date(timeIntervalSince1970: 1_000_000)
    var before: Date { requestedAt.addingTimeInterval(-60) }
    var after: Date { requestedAt.addingTimeInterval(5) }

    func snapshot(_ sku: String, revision: Int, price: Int = 100) -> SnapshotEntry {
        SnapshotEntry(sku: sku, name: sku, price: price, revision: revision)
    }

    @Test func anEmptyCopyTakesTheWholeSnapshot() {
        let plan = CatalogueSwap.plan(live: [], snapshot: [snapshot("B", revision: 1), snapshot("A", revision: 2)], requestedAt: requestedAt)
        #expect(plan.replace.map(\.sku) == ["A", "B"])
        #expect(plan.keptNewer.isEmpty && plan.remove.isEmpty)
    }

    @Test func theSnapshotRepairsRowsOfTheSameOrAnOlderRevision() {
        let live = [LiveCatalogueEntry(sku: "A", revision: 3, updatedAt: before), LiveCatalogueEntry(sku: "B", revision: 1, updatedAt: before)]
        let plan = CatalogueSwap.plan(
            live: live, snapshot: [snapshot("A", revision: 3, price: 250), snapshot("B", revision: 2)], requestedAt: requestedAt)
        #expect(plan.replace == [snapshot("A", revision: 3, price: 250), snapshot("B", revision: 2)])
    }

    @Test func aLiveUpdateNewerThanTheSnapshotIsKept() {
        let live = [LiveCatalogueEntry(sku: "A", revision: 5, updatedAt: after)]
        let plan = CatalogueSwap.plan(live: live, snapshot: [snapshot("A", revision: 4)], requestedAt: requestedAt)
        #expect(plan.replace.isEmpty)
        #expect(plan.keptNewer == ["A"])
    }

    @Test func aStaleRowAbsentFromTheSnapshotIsRemoved() {
        let live = [LiveCatalogueEntry(sku: "GONE", revision: 1, updatedAt: before), LiveCatalogueEntry(sku: "A", revision: 1, updatedAt: before)]
        let plan = CatalogueSwap.plan(live: live, snapshot: [snapshot("A", revision: 1)], requestedAt: requestedAt)
        #expect(plan.remove == ["GONE"])
    }

    @Test func aProductCreatedAfterTheRequestIsNotRemoved() {
        // Announced by a ProductUpdated after the snapshot was taken: absent from it, but real.
        let live = [LiveCatalogueEntry(sku: "NEW", revision: 1, updatedAt: after)]
        let plan = CatalogueSwap.plan(live: live, snapshot: [snapshot("A", revision: 1)], requestedAt: requestedAt)
        #expect(plan.remove.isEmpty)
        #expect(plan.replace.map(\.sku) == ["A"])
    }
}

