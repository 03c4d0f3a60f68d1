import Foundation

/// A PostgreSQL type, by its OID (the number `pg_type.oid` and libpq use).
///
/// Only the types this layer binds or that a reader meets in error messages are named;
/// any other OID is still representable.
public struct PostgresType: Sendable, Hashable, CustomStringConvertible {
    public var oid: UInt32
    public init(oid: UInt32) { self.oid = oid }

    /// "Let the server infer the type from the SQL", as a literal would be.
    public static let unspecified = PostgresType(oid: 0)
    public static let bool = PostgresType(oid: 16)
    public static let bytea = PostgresType(oid: 17)
    public static let int8 = PostgresType(oid: 20)
    public static let int4 = PostgresType(oid: 23)
    public static let text = PostgresType(oid: 25)
    public static let json = PostgresType(oid: 114)
    public static let date = PostgresType(oid: 1082)
    public static let timestamp = PostgresType(oid: 1114)
    public static let timestamptz = PostgresType(oid: 1184)
    public static let uuid = PostgresType(oid: 2950)
    public static let jsonb = PostgresType(oid: 3802)

    public var description: String {
        let names: [UInt32: String] = [
            0: "unspecified", 16: "bool", 17: "bytea", 20: "int8", 23: "int4", 25: "text", 114: "json",
            1082: "date", 1114: "timestamp", 1184: "timestamptz", 2950: "uuid", 3802: "jsonb",
        ]
        return names[oid] ?? "oid \(oid)"
    }
}

/// One statement parameter, as libpq receives it.
public struct PostgresBinding: Sendable, Equatable {
    /// The value in one of libpq's two parameter formats, or SQL NULL.
    public enum Value: Sendable, Equatable {
        case null
        /// The type's text input form, as you would write it in a literal.
        case text(String)
        /// Raw bytes in the type's binary form; we use it only for bytea, whose binary form is the
        /// bytes themselves, so zero bytes need no escaping.
        case binary([UInt8])
    }

    public var value: Value
    /// The parameter's declared type; `.unspecified` lets the server infer it from the SQL.
    public var type: PostgresType

    public init(_ value: Value, type: PostgresType) {
        self.value = value
        self.type = type
    }
}

/// A Swift value that can be a statement parameter (`$1`, `$2`…).
///
/// Values always travel separately from the SQL text, so they can never change what the
/// statement means. Types with one obvious PostgreSQL counterpart declare it (`Int` is `int8`,
/// `UUID` is `uuid`…), so `SELECT $1 + 1` is unambiguous and even a NULL has a type; `String`
/// stays unspecified and takes whatever type the SQL gives it (text, an enum, `$1::timestamptz`).
/// `nil` binds SQL NULL.
public protocol PostgresBindable: Sendable {
    /// The type parameters of this Swift type are declared as.
    static var postgresType: PostgresType { get }
    /// The value in one of libpq's parameter formats.
    var postgresValue: PostgresBinding.Value { get }
}

extension PostgresBindable {
    /// The parameter as libpq receives it.
    public var postgresBinding: PostgresBinding { PostgresBinding(postgresValue, type: Self.postgresType) }
}

extension String: PostgresBindable {
    public static var postgresType: PostgresType { .unspecified }
    public var postgresValue: PostgresBinding.Value { .text(self) }
}

extension Int: PostgresBindable {
    public static var postgresType: PostgresType { .int8 }
    public var postgresValue: PostgresBinding.Value { .text(String(self)) }
}

extension Int64: PostgresBindable {
    public static var postgresType: PostgresType { .int8 }
    public var postgresValue: PostgresBinding.Value { .text(String(self)) }
}

extension Int32: PostgresBindable {
    public static var postgresType: PostgresType { .int4 }
    public var postgresValue: PostgresBinding.Value { .text(String(self)) }
}

extension Bool: PostgresBindable {
    public static var postgresType: PostgresType { .bool }
    public var postgresValue: PostgresBinding.Value { .text(self ? "t" : "f") }
}

extension UUID: PostgresBindable {
    public static var postgresType: PostgresType { .uuid }
    /// Sent as text (Postgres prints UUIDs lower-case, Foundation's `uuidString` is upper-case;
    /// either is accepted on input), declared `uuid` so it compares as a value, not as a string.
    public var postgresValue: PostgresBinding.Value { .text(uuidString.lowercased()) }
}

extension Date: PostgresBindable {
    public static var postgresType: PostgresType { .timestamptz }
    /// ISO-8601 in UTC with microseconds, PostgreSQL's own precision: `2026-11-23T20:36:01.123456Z`.
    public var postgresValue: PostgresBinding.Value { .text(PostgresTimestamp.format(self)) }
}

extension Data: PostgresBindable {
    public static var postgresType: PostgresType { .bytea }
    public var postgresValue: PostgresBinding.Value { .binary(Array(self)) }
}

extension Array: PostgresBindable where Element == UInt8 {
    public static var postgresType: PostgresType { .bytea }
    public var postgresValue: PostgresBinding.Value { .binary(self) }
}

extension Optional: PostgresBindable where Wrapped: PostgresBindable {
    /// A NULL keeps its wrapped type, so `nil as Int?` is a NULL `int8`.
    public static var postgresType: PostgresType { Wrapped.postgresType }
    public var postgresValue: PostgresBinding.Value { self?.postgresValue ?? .null }
}
