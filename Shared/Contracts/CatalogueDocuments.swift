import Foundation

/// The event catalogue as documents, generated from `EventCatalogue` so they can't drift from
/// the code: a Markdown table for people and an AsyncAPI 3.0 document for tools. `bazaar docs`
/// writes them to `docs/`; a test fails when the committed files differ from what this makes.
public enum CatalogueDocuments {
    /// `docs/event-catalogue.md`.
    public static func markdown() -> String {
        var lines = [
            "# Event catalogue",
            "",
            "Generated from `Shared/Contracts/EventCatalogue.swift` by `swift run bazaar docs --write`; do not edit by hand.",
            "",
            "Every event travels in the envelope described in the README, as JSON, on its producer's durable topic",
            "exchange, with the routing key `<aggregate>.<what happened>.v<version>`.",
            "",
            "| event | version | exchange | routing key | producer | consumers | schema | sample |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for event in EventCatalogue.events {
            let stem = EventCatalogue.fileStem(of: event)
            let consumers = EventCatalogue.consumers(of: event).map(\.rawValue)
            lines.append(
                "| \(event.type) | \(event.version) | `\(event.producer.exchange)` | `\(event.routingKey)` | \(event.producer.rawValue) | "
                    + "\(consumers.isEmpty ? "—" : consumers.joined(separator: ", ")) | "
                    + "[schema](../Shared/Contracts/Schemas/\(stem).schema.json) | [sample](../Shared/Contracts/Samples/\(stem).json) |")
        }
        lines += ["", "## Queues", "", "| service | queue | bound to | dead letters |", "|---|---|---|---|"]
        for service in ServiceName.allCases {
            let keys = EventCatalogue.subscriptions[service, default: []].map { "`\($0.producer.exchange)` `\($0.routingKey)`" }
            lines.append(
                "| \(service.rawValue) | `\(service.queue)` (quorum) | \(keys.joined(separator: "<br>")) | `\(service.deadLetterExchange)` → `\(service.deadLetterQueue)` |")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// `docs/asyncapi.json`: channels are the routing keys on each exchange (AMQP binding 0.3.0),
    /// operations say who sends and who receives each event, payloads point at the JSON Schemas.
    public static func asyncAPI() throws -> String {
        var channels: [String: Any] = [:]
        var operations: [String: Any] = [:]
        var messages: [String: Any] = [:]
        for event in EventCatalogue.events {
            let stem = EventCatalogue.fileStem(of: event)
            let channelId = "\(event.producer.exchange)/\(event.routingKey)"
            let messageRef = ["$ref": "#/components/messages/\(stem)"]
            channels[channelId] = [
                "address": event.routingKey,
                "messages": [stem: messageRef],
                "bindings": [
                    "amqp": [
                        "is": "routingKey",
                        "exchange": ["name": event.producer.exchange, "type": "topic", "durable": true, "autoDelete": false, "vhost": "/"],
                        "bindingVersion": "0.3.0",
                    ]
                ],
            ]
            let channelRef = ["$ref": "#/channels/\(escapePointer(channelId))"]
            let operationMessage = ["$ref": "#/channels/\(escapePointer(channelId))/messages/\(stem)"]
            operations["\(event.producer.rawValue).send.\(stem)"] = [
                "action": "send", "channel": channelRef, "messages": [operationMessage],
                "summary": "\(event.producer.rawValue) publishes \(event.type) v\(event.version)",
            ]
            for consumer in EventCatalogue.consumers(of: event) {
                operations["\(consumer.rawValue).receive.\(stem)"] = [
                    "action": "receive", "channel": channelRef, "messages": [operationMessage],
                    "summary": "\(consumer.rawValue) consumes \(event.type) v\(event.version) from its queue `\(consumer.queue)`",
                    "bindings": ["amqp": ["ack": true, "bindingVersion": "0.3.0"]],
                ]
            }
            messages[stem] = [
                "name": event.type, "title": "\(event.type) v\(event.version)", "contentType": "application/json",
                "payload": ["$ref": "../Shared/Contracts/Schemas/\(stem).schema.json"],
                "bindings": ["amqp": ["messageType": event.type, "deliveryMode": 2, "bindingVersion": "0.3.0"]],
            ]
        }
        let document: [String: Any] = [
            "asyncapi": "3.0.0",
            "info": [
                "title": "Bazaar",
                "version": "1.0.0",
                "description": "Events of the Bazaar order saga. Generated from Shared/Contracts/EventCatalogue.swift by `swift run bazaar docs --write`.",
            ],
            "defaultContentType": "application/json",
            "servers": [
                "local": ["host": "127.0.0.1:5673", "protocol": "amqp", "description": "The local stack of `make run`."]
            ],
            "channels": channels,
            "operations": operations,
            "components": ["messages": messages],
        ]
        let data = try JSONSerialization.data(withJSONObject: document, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        return String(decoding: data, as: UTF8.self) + "\n"
    }

    /// JSON Pointer escaping of a key that contains `/` or `~` (RFC 6901).
    private static func escapePointer(_ key: String) -> String {
        key.replacingOccurrences(of: "~", with: "~0").replacingOccurrences(of: "/", with: "~1")
    }
}
