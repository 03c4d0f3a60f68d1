import Foundation
import TestSupport
import Testing

@testable import Contracts

@Suite("Event contracts")
struct ContractTests {
    @Test func routingKeysFollowTheConventionAndAreUnique() {
        let keys = EventCatalogue.events.map { $0.routingKey }
        #expect(Set(keys).count == keys.count)
        for event in EventCatalogue.events {
            #expect(event.routingKey.wholeMatch(of: /[a-z]+\.[a-z]+\.v[0-9]+/) != nil, "\(event.routingKey)")
        }
        #expect(OrderPlaced.routingKey == "order.placed.v1")
        #expect(PaymentRefunded.routingKey == "payment.refunded.v1")
    }

    @Test func eachServicePublishesToItsOwnExchangeAndConsumesOnlyOthersEvents() {
        #expect(ServiceName.allCases.map(\.exchange) == ["orders", "inventory", "payments", "notifications"])
        for (service, events) in EventCatalogue.subscriptions {
            for event in events { #expect(event.producer != service, "\(service) consumes its own \(event.type)") }
        }
        #expect(EventCatalogue.consumers(of: OrderCancelled.self) == [.inventory, .payment, .notification])
    }

    @Test(arguments: EventCatalogue.events.map(EventCatalogue.fileStem))
    func everyEventVersionHasASchemaAndASample(stem: String) throws {
        let event = try #require(EventCatalogue.events.first { EventCatalogue.fileStem(of: $0) == stem })
        #expect(ContractFiles.schema(of: event) != nil, "no Schemas/\(stem).schema.json")
        #expect(ContractFiles.sample(of: event) != nil, "no Samples/\(stem).json")
    }

    @Test func everyStoredSampleStillDecodesAndReencodesToTheSameJSON() throws {
        let samples = ContractFiles.allSamples
        #expect(samples.count >= EventCatalogue.events.count)
        for url in samples {
            let data = try Data(contentsOf: url)
            let header = try EventJSON.decode(EnvelopeHeader.self, from: data)
            let event = try #require(
                EventCatalogue.event(type: header.type, version: header.version),
                "\(url.lastPathComponent): no decoder for \(header.type) v\(header.version)")
            let reencoded = try roundTrip(data, as: event)
            #expect(
                sameJSON(normalizingUUIDs(try json(reencoded)), normalizingUUIDs(try json(data))),
                "\(url.lastPathComponent) changed in a round trip")
        }
    }

    @Test func whatTheSwiftTypesEncodeValidatesAgainstTheSchemas() throws {
        var checks: [SchemaCheck] = []
        for event in EventCatalogue.events {
            let sample = try Data(contentsOf: try #require(ContractFiles.sample(of: event)))
            let encoded = try roundTrip(sample, as: event)
            checks.append(SchemaCheck(schema: try #require(ContractFiles.schema(of: event)).path, instance: encoded))
        }
        // A freshly made envelope too: dates, UUIDs and optional fields as the encoder writes them.
        let placed = EventEnvelope(
            correlationId: UUID(), causationId: nil,
            data: OrderPlaced(orderId: UUID(), customerId: "bob", items: [OrderLine(sku: "A", quantity: 1, unitPrice: 5)], total: 5))
        checks.append(SchemaCheck(schema: try #require(ContractFiles.schema(of: OrderPlaced.self)).path, instance: try EventJSON.encode(placed)))

        let failures = try JSONSchemaValidator.validate(checks)
        #expect(failures.isEmpty, "\(failures)")
    }

    @Test func theSchemasRejectWhatTheContractForbids() throws {
        let schema = try #require(ContractFiles.schema(of: OrderPlaced.self)).path
        let sample = try json(try Data(contentsOf: try #require(ContractFiles.sample(of: OrderPlaced.self))))
        func variant(_ change: (inout [String: Any]) -> Void) throws -> SchemaCheck {
            var copy = sample
            change(&copy)
            return SchemaCheck(schema: schema, instance: try JSONSerialization.data(withJSONObject: copy))
        }
        let forbidden = [
            try variant { $0["eventId"] = nil },
            try variant { $0["version"] = 2 },
            try variant { $0["source"] = "payment" },
            try variant { var data = $0["data"] as! [String: Any]; data["total"] = 45.5; $0["data"] = data },
            try variant { var data = $0["data"] as! [String: Any]; data["items"] = []; $0["data"] = data },
            try variant { $0["occurredAt"] = "yesterday" },
        ]
        let failures = try JSONSchemaValidator.validate(forbidden)
        #expect(failures.count == forbidden.count, "accepted: \(forbidden.indices.filter { i in !failures.contains { $0.index == i } })")
    }

    @Test func anEnvelopeOfAnotherTypeOrVersionIsRefused() throws {
        let sample = try Data(contentsOf: try #require(ContractFiles.sample(of: OrderPlaced.self)))
        #expect(throws: DecodingError.self) { try EventJSON.decode(EventEnvelope<OrderConfirmed>.self, from: sample) }
    }

    @Test func datesAreISO8601WithMilliseconds() throws {
        let envelope = EventEnvelope(
            occurredAt: Date(timeIntervalSince1970: 1_795_000_000.25), correlationId: UUID(), causationId: nil,
            data: OrderConfirmed(orderId: UUID(), customerId: "c", total: 1))
        let text = String(decoding: try EventJSON.encode(envelope), as: UTF8.self)
        #expect(text.contains(#""occurredAt":"2026-11-18T"#))
        #expect(text.contains(".250Z"))
        let decoded = try EventJSON.decode(EventEnvelope<OrderConfirmed>.self, from: Data(text.utf8))
        #expect(abs(decoded.occurredAt.timeIntervalSince(envelope.occurredAt)) < 0.001)
        #expect(decoded.data == envelope.data, "\(text)")
        #expect(decoded.eventId == envelope.eventId)
    }

    // MARK: Helpers

    private func roundTrip(_ data: Data, as event: any DomainEvent.Type) throws -> Data {
        func reencode<E: DomainEvent>(_: E.Type) throws -> Data {
            try EventJSON.encode(try EventJSON.decode(EventEnvelope<E>.self, from: data))
        }
        return try reencode(event)
    }

    /// UUIDs compare as values: Foundation writes them in upper case, the samples in lower case.
    private func normalizingUUIDs(_ value: Any) -> Any {
        switch value {
        case let string as String: UUID(uuidString: string).map { $0.uuidString } ?? string
        case let array as [Any]: array.map(normalizingUUIDs)
        case let object as [String: Any]: object.mapValues(normalizingUUIDs)
        default: value
        }
    }

    private func json(_ data: Data) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }
}

/// Equality of parsed JSON values.
private func sameJSON(_ lhs: Any, _ rhs: Any) -> Bool {
    NSDictionary(dictionary: ["value": lhs]).isEqual(to: ["value": rhs])
}

@Suite("Generated documents")
struct GeneratedDocumentTests {
    @Test(arguments: ["event-catalogue.md", "asyncapi.json"])
    func theCommittedDocumentIsUpToDateWithTheContracts(file: String) throws {
        let committed = try String(
            contentsOf: StackEnvironment.repositoryRoot.appendingPathComponent("docs/\(file)"), encoding: .utf8)
        let generated = file.hasSuffix(".md") ? CatalogueDocuments.markdown() : try CatalogueDocuments.asyncAPI()
        #expect(committed == generated, "docs/\(file) is out of date with the contracts: run `swift run bazaar docs --write`")
    }

    @Test func theAsyncAPIDocumentNamesEveryEventProducerAndConsumer() throws {
        let document = try #require(
            try JSONSerialization.jsonObject(with: Data(try CatalogueDocuments.asyncAPI().utf8)) as? [String: Any])
        #expect(document["asyncapi"] as? String == "3.0.0")
        let operations = try #require(document["operations"] as? [String: Any])
        #expect(operations["order.send.OrderPlaced.v1"] != nil)
        #expect(operations["inventory.receive.OrderPlaced.v1"] != nil)
        #expect(operations["payment.receive.OrderCancelled.v1"] != nil)
        let sends = operations.keys.filter { $0.contains(".send.") }.count
        let receives = operations.keys.filter { $0.contains(".receive.") }.count
        #expect(sends == EventCatalogue.events.count)
        #expect(receives == EventCatalogue.subscriptions.values.map(\.count).reduce(0, +))
        // Every reference inside the document resolves.
        let text = try CatalogueDocuments.asyncAPI()
        for match in text.matches(of: /"\$ref" : "#\/([^"]+)"/) {
            var node: Any? = document
            for part in match.1.split(separator: "/") {
                let key = part.replacingOccurrences(of: "~1", with: "/").replacingOccurrences(of: "~0", with: "~")
                node = (node as? [String: Any])?[key]
            }
            #expect(node != nil, "unresolved reference #/\(match.1)")
        }
    }
}
