import Foundation

/// Every event of the system and who reacts to it: the choreography in one table.
///
/// The services' queue bindings, the JSON Schemas and stored samples beside this file, and the
/// generated event catalogue all follow from these lists; tests fail when they disagree.
public enum EventCatalogue {
    /// Every published event version.
    public static let events: [any DomainEvent.Type] = [
        OrderPlaced.self, OrderConfirmed.self, OrderCancelled.self, CatalogueSnapshotRequested.self,
        StockReserved.self, StockRejected.self, StockReleased.self, ProductUpdated.self, ProductSnapshot.self,
        PaymentCaptured.self, PaymentDeclined.self, PaymentRefunded.self,
        NotificationSent.self,
    ]

    /// The events each service consumes (its queue is bound to their routing keys).
    public static let subscriptions: [ServiceName: [any DomainEvent.Type]] = [
        .order: [ProductUpdated.self, ProductSnapshot.self, StockRejected.self, PaymentCaptured.self, PaymentDeclined.self],
        .inventory: [OrderPlaced.self, OrderConfirmed.self, OrderCancelled.self, CatalogueSnapshotRequested.self],
        .payment: [StockReserved.self, OrderCancelled.self],
        .notification: [OrderConfirmed.self, OrderCancelled.self, PaymentRefunded.self],
    ]

    /// The services that consume `event`.
    public static func consumers(of event: any DomainEvent.Type) -> [ServiceName] {
        ServiceName.allCases.filter { service in
            subscriptions[service, default: []].contains { $0 == event }
        }
    }

    /// The event type registered for an envelope's `type` and `version`, if any.
    public static func event(type: String, version: Int) -> (any DomainEvent.Type)? {
        events.first { $0.type == type && $0.version == version }
    }

    /// `OrderPlaced.v1`: how schema and sample files are named.
    public static func fileStem(of event: any DomainEvent.Type) -> String { "\(event.type).v\(event.version)" }
}

/// The JSON Schema and stored sample of each event version, shipped with the module.
public enum ContractFiles {
    /// `Schemas/<Type>.v<version>.schema.json`
    public static func schema(of event: any DomainEvent.Type) -> URL? {
        Bundle.module.url(
            forResource: EventCatalogue.fileStem(of: event) + ".schema", withExtension: "json", subdirectory: "Schemas")
    }

    /// `Samples/<Type>.v<version>.json`: an event as it was once published. Samples are added,
    /// never changed or deleted: every one must keep decoding, which is how schema evolution stays safe.
    public static func sample(of event: any DomainEvent.Type) -> URL? {
        Bundle.module.url(forResource: EventCatalogue.fileStem(of: event), withExtension: "json", subdirectory: "Samples")
    }

    /// Every stored sample. Each must keep decoding, so an event version stays in the catalogue
    /// (and keeps its Swift type) for as long as any sample of it is stored.
    public static var allSamples: [URL] {
        let folder = Bundle.module.resourceURL!.appendingPathComponent("Samples")
        let files = (try? FileManager.default.contentsOfDirectory(at: folder, includingPropertiesForKeys: nil)) ?? []
        return files.filter { $0.pathExtension == "json" }.sorted { $0.lastPathComponent < $1.lastPathComponent }
    }
}
