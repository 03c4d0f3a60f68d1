import Foundation

/// A JSON document for a `jsonb` (or `json`) column, kept as its UTF-8 text.
///
/// A wrapper rather than binding `Data` as JSON, because `Data` already means `bytea`. Encoding
/// and decoding default to ISO-8601 dates: `JSONEncoder`'s own default, seconds since 2001, would
/// be unreadable to every other consumer of the column.
public struct PostgresJSON: Sendable, Hashable, PostgresBindable, PostgresDecodable {
    /// The document's UTF-8 text.
    public var data: Data

    public init(data: Data) { self.data = data }

    /// A document from JSON text, for example `#"{"sku": "A-1"}"#`.
    public init(_ text: String) { self.data = Data(text.utf8) }

    /// Encodes `value` as the document.
    public init<Value: Encodable>(encoding value: Value, encoder: JSONEncoder = PostgresJSON.makeEncoder()) throws {
        self.data = try encoder.encode(value)
    }

    /// Decodes the document.
    public func decode<Value: Decodable>(
        _ type: Value.Type, decoder: JSONDecoder = PostgresJSON.makeDecoder()
    ) throws -> Value {
        try decoder.decode(type, from: data)
    }

    /// The document's text.
    public var text: String { String(decoding: data, as: UTF8.self) }

    public static var postgresType: PostgresType { .jsonb }
    public var postgresValue: PostgresBinding.Value { .text(text) }

    public init?(postgresText text: String) { self.init(text) }

    /// A `JSONEncoder` writing ISO-8601 dates and sorted keys (stable output for tests and diffs).
    public static func makeEncoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }

    /// A `JSONDecoder` reading ISO-8601 dates.
    public static func makeDecoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }
}
