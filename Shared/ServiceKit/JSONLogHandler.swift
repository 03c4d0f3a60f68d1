import Foundation
import Logging

/// Writes each log record as one line of JSON on standard output, for log collectors:
/// `{"ts":"2026-11-23T21:22:13.456Z","level":"info","logger":"bazaar.order","message":"handled",
///   "eventType":"OrderPlaced","orderId":"…",…}`. Chosen with `LOG_FORMAT=json`.
///
/// Metadata keys sit beside the fixed ones, so a collector can index them directly; the fixed
/// keys win if a metadata key has the same name.
public struct JSONLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    private let label: String

    public init(label: String, metadataProvider: Logger.MetadataProvider? = nil) {
        self.label = label
        self.metadataProvider = metadataProvider
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var fields = metadata
        if let provided = metadataProvider?.get() { fields.merge(provided) { $1 } }
        if let extra = event.metadata { fields.merge(extra) { $1 } }
        var object: [String: Any] = fields.mapValues(Self.json)
        object["ts"] = Date().formatted(Self.timestamp)
        object["level"] = event.level.rawValue
        object["logger"] = label
        object["message"] = event.message.description
        if let error = event.error { object["error"] = "\(error)" }
        guard var line = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
        else { return }
        line.append(UInt8(ascii: "\n"))
        // One write per record, so lines from several threads never interleave.
        FileHandle.standardOutput.write(line)
    }

    private static let timestamp = Date.ISO8601FormatStyle(includingFractionalSeconds: true)

    private static func json(_ value: Logger.Metadata.Value) -> Any {
        switch value {
        case .string(let string): string
        case .stringConvertible(let convertible): convertible.description
        case .array(let array): array.map(json)
        case .dictionary(let dictionary): dictionary.mapValues(json)
        }
    }
}
