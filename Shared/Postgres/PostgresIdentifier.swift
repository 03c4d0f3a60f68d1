/// Quoting for SQL identifiers (schema, table, channel names).
///
/// Identifiers cannot be statement parameters, so the few statements that need a name from
/// configuration (`LISTEN channel`, `CREATE SCHEMA name`) splice it in quoted. Quoting also keeps
/// the name exactly as given: unquoted, `LISTEN Orders` would listen on `orders`, and
/// `pg_notify('Orders', …)` would never reach it.
public enum PostgresIdentifier {
    /// PostgreSQL truncates longer identifiers (NAMEDATALEN - 1 bytes); we refuse them instead, so
    /// two long names can never silently become one.
    public static let maximumLength = 63

    /// `name` as a quoted identifier: in double quotes, inner double quotes doubled.
    /// Throws for an empty name, a NUL character, or more than 63 bytes.
    public static func quoted(_ name: String) throws -> String {
        guard !name.isEmpty else {
            throw PostgresError(.invalidParameter, message: "an identifier cannot be empty")
        }
        guard !name.utf8.contains(0) else {
            throw PostgresError(.invalidParameter, message: "an identifier cannot contain NUL")
        }
        guard name.utf8.count <= maximumLength else {
            throw PostgresError(
                .invalidParameter, message: "identifier '\(name)' is longer than \(maximumLength) bytes")
        }
        return "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
}
