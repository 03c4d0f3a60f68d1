import Foundation

/// One row of a result, copied out of libpq, with typed access to its columns.
///
/// ```swift
/// let quantity = try row.decode(Int.self, column: "qty")
/// let note = try row.decode(String?.self, column: "note")   // NULL → nil
/// ```
public struct PostgresRow: Sendable {
    let columns: PostgresColumns
    /// Each column's text output; nil for SQL NULL.
    let values: [String?]

    /// The columns' names, in order.
    public var columnNames: [String] { columns.names }

    /// The columns' types, in order.
    public var columnTypes: [PostgresType] { columns.types }

    /// Decodes a non-NULL column; NULL throws a `PostgresDecodingError` naming the column.
    public func decode<Value: PostgresDecodable>(_ type: Value.Type, column name: String) throws -> Value {
        try decode(type, at: index(of: name), label: name)
    }

    /// Decodes a column that may be NULL.
    public func decode<Value: PostgresDecodable>(_ type: Value?.Type, column name: String) throws -> Value? {
        try decode(type, at: index(of: name), label: name)
    }

    /// Decodes the non-NULL column at `index` (0-based).
    public func decode<Value: PostgresDecodable>(_ type: Value.Type, at index: Int) throws -> Value {
        try decode(type, at: checked(index), label: label(index))
    }

    /// Decodes the column at `index` (0-based), which may be NULL.
    public func decode<Value: PostgresDecodable>(_ type: Value?.Type, at index: Int) throws -> Value? {
        try decode(type, at: checked(index), label: label(index))
    }

    /// Decodes a `json`/`jsonb` column into a `Decodable` type (ISO-8601 dates by default).
    public func decodeJSON<Value: Decodable>(
        _ type: Value.Type, column name: String, decoder: JSONDecoder = PostgresJSON.makeDecoder()
    ) throws -> Value {
        let document = try decode(PostgresJSON.self, column: name)
        do {
            return try document.decode(type, decoder: decoder)
        } catch {
            throw PostgresDecodingError(column: name, reason: "JSON does not decode as \(type): \(error)")
        }
    }

    /// Whether the named column is SQL NULL.
    public func isNull(column name: String) throws -> Bool {
        values[try index(of: name)] == nil
    }

    // MARK: -

    private func decode<Value: PostgresDecodable>(_ type: Value.Type, at index: Int, label: String) throws -> Value {
        guard let value = try decode(Value?.self, at: index, label: label) else {
            throw PostgresDecodingError(column: label, reason: "NULL where a non-optional \(type) was expected")
        }
        return value
    }

    private func decode<Value: PostgresDecodable>(_ type: Value?.Type, at index: Int, label: String) throws -> Value? {
        guard let text = values[index] else { return nil }
        guard let value = Value(postgresText: text) else {
            let shown = text.count > 64 ? String(text.prefix(64)) + "…" : text
            throw PostgresDecodingError(
                column: label, reason: "cannot read \(columns.types[index]) value '\(shown)' as \(Value.self)")
        }
        return value
    }

    private func index(of name: String) throws -> Int {
        guard let index = columns.indexByName[name] else {
            throw PostgresDecodingError(
                column: name, reason: "no such column (the row has \(columns.names.joined(separator: ", ")))")
        }
        return index
    }

    private func checked(_ index: Int) throws -> Int {
        guard columns.names.indices.contains(index) else {
            throw PostgresDecodingError(
                column: "#\(index)", reason: "no such column (the row has \(columns.names.count))")
        }
        return index
    }

    private func label(_ index: Int) -> String { "#\(index) (\(columns.names[index]))" }
}

/// Names and types of a result's columns, shared by all its rows.
final class PostgresColumns: Sendable {
    let names: [String]
    let types: [PostgresType]
    /// The first column of each name wins, as in SQL's own `ORDER BY name`.
    let indexByName: [String: Int]

    init(names: [String], types: [PostgresType]) {
        self.names = names
        self.types = types
        self.indexByName = Dictionary(names.enumerated().map { ($1, $0) }, uniquingKeysWith: { first, _ in first })
    }
}
