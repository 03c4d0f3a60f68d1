import Foundation

/// A Swift value that can be read from a column of a result row.
///
/// Results come back in PostgreSQL's text format, so each type parses the text the server
/// prints for it. NULL never reaches a conformance: the row handles it, giving `nil` to an
/// `Optional` request and a `PostgresDecodingError` to a non-optional one.
public protocol PostgresDecodable: Sendable {
    /// Parses the server's text output of a non-NULL value; nil when it is not this type's form.
    init?(postgresText text: String)
}

extension String: PostgresDecodable {
    public init?(postgresText text: String) { self = text }
}

extension Int: PostgresDecodable {
    public init?(postgresText text: String) { self.init(text) }
}

extension Int64: PostgresDecodable {
    public init?(postgresText text: String) { self.init(text) }
}

extension Int32: PostgresDecodable {
    public init?(postgresText text: String) { self.init(text) }
}

extension Double: PostgresDecodable {
    /// `float8` prints as Swift reads it, `Infinity` and `NaN` included.
    public init?(postgresText text: String) { self.init(text) }
}

extension Bool: PostgresDecodable {
    /// Postgres prints booleans as `t` and `f`.
    public init?(postgresText text: String) {
        switch text {
        case "t", "true": self = true
        case "f", "false": self = false
        default: return nil
        }
    }
}

extension UUID: PostgresDecodable {
    /// Accepts either case (Postgres prints lower-case).
    public init?(postgresText text: String) { self.init(uuidString: text) }
}

extension Date: PostgresDecodable {
    /// `timestamptz` output (`2026-11-23 20:36:01.123456+00`), `timestamp` (read as UTC) or `date`.
    public init?(postgresText text: String) {
        guard let date = PostgresTimestamp.parse(text) else { return nil }
        self = date
    }
}

extension Array: PostgresDecodable where Element == UInt8 {
    /// `bytea` in its hex output form, `\x0001ff`.
    public init?(postgresText text: String) {
        let hex = Array(text.utf8)
        guard hex.count >= 2, hex[0] == UInt8(ascii: "\\"), hex[1] == UInt8(ascii: "x"), hex.count % 2 == 0 else {
            return nil
        }
        func nibble(_ character: UInt8) -> UInt8? {
            switch character {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): character - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): character - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): character - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(hex.count / 2 - 1)
        var index = 2
        while index < hex.count {
            guard let high = nibble(hex[index]), let low = nibble(hex[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
            index += 2
        }
        self = bytes
    }
}

extension Data: PostgresDecodable {
    /// `bytea` in its hex output form. For a `json`/`jsonb` column decode `PostgresJSON` instead.
    public init?(postgresText text: String) {
        guard let bytes = [UInt8](postgresText: text) else { return nil }
        self.init(bytes)
    }
}

/// A column's value could not be read as the requested type.
public struct PostgresDecodingError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The column's name, or `#index` when asked for by position.
    public var column: String
    /// What was wrong, for people.
    public var reason: String

    public init(column: String, reason: String) {
        self.column = column
        self.reason = reason
    }

    public var description: String { "column \(column): \(reason)" }
}
