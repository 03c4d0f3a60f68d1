/// A failure reported by the server or by libpq, with what they said.
///
/// Server errors carry the fields a caller can act on: the SQLSTATE code (`23505` unique
/// violation, `40001` serialization failure…), and where the server gave them the detail, hint and
/// the constraint, table and column involved. Connection errors carry libpq's message, which never
/// contains the password.
public struct PostgresError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What kind of failure this is; it decides what the caller can do about it.
    public enum Kind: Sendable, Equatable {
        /// The configuration or URL could not be understood.
        case invalidConfiguration
        /// A connection could not be opened (or re-opened).
        case connectionFailed
        /// The connection dropped (server restart, `pg_terminate_backend`, network). The statement
        /// may or may not have run; retrying is the caller's decision, on a fresh connection.
        case connectionLost
        /// The server rejected the statement; `sqlState` says why.
        case server
        /// A parameter could not be sent (for example a string containing NUL).
        case invalidParameter
        /// libpq returned something this layer does not handle (COPY, out of memory…).
        case unexpectedResult
        /// The pool or listener was shut down.
        case closed
    }

    public var kind: Kind
    /// The server's primary message, or libpq's.
    public var message: String
    /// The five-character SQLSTATE (`PG_DIAG_SQLSTATE`), for server errors.
    public var sqlState: String?
    public var detail: String?
    public var hint: String?
    /// The constraint whose violation caused the error (`PG_DIAG_CONSTRAINT_NAME`).
    public var constraint: String?
    public var schema: String?
    public var table: String?
    public var column: String?

    public init(
        _ kind: Kind, message: String, sqlState: String? = nil, detail: String? = nil, hint: String? = nil,
        constraint: String? = nil, schema: String? = nil, table: String? = nil, column: String? = nil
    ) {
        self.kind = kind
        self.message = message
        self.sqlState = sqlState
        self.detail = detail
        self.hint = hint
        self.constraint = constraint
        self.schema = schema
        self.table = table
        self.column = column
    }

    /// SQLSTATE 23505: an insert or update collided with a unique index, typically "already done"
    /// for an idempotent handler.
    public var isUniqueViolation: Bool { sqlState == "23505" }

    /// The connection went away under the statement: retry on another connection if the
    /// operation is safe to repeat.
    public var isConnectionLost: Bool { kind == .connectionLost }

    /// The server could not be reached, or refused the session before anything ran: a request
    /// that failed so did nothing, and may be sent again as it is. (Unlike a connection lost
    /// mid-transaction, which may have committed.)
    public var isServerUnavailable: Bool {
        kind == .connectionFailed || (kind == .server && ["57P03", "53300"].contains(sqlState ?? ""))
    }

    /// A failure of the database or of the session, not of the statement: the same work can
    /// succeed once the server is back (unreachable, restarting, the backend terminated) or on a
    /// second try (a serialization failure or deadlock, which roll the transaction back).
    public var isTransient: Bool {
        switch kind {
        case .connectionFailed, .connectionLost: return true
        case .server:
            guard let sqlState else { return false }
            // 08: connection exception; 57P01-57P03: admin or crash shutdown, cannot connect now;
            // 53300: too many connections; 40001, 40P01: serialization failure, deadlock.
            return sqlState.hasPrefix("08") || ["57P01", "57P02", "57P03", "53300", "40001", "40P01"].contains(sqlState)
        default: return false
        }
    }

    public var description: String {
        var text: String
        switch kind {
        case .invalidConfiguration: text = message
        case .connectionFailed: text = "could not connect to PostgreSQL: \(message)"
        case .connectionLost: text = "connection to PostgreSQL lost: \(message)"
        case .server: text = "PostgreSQL error \(sqlState ?? "?????"): \(message)"
        case .invalidParameter: text = "invalid parameter: \(message)"
        case .unexpectedResult: text = "unexpected result from libpq: \(message)"
        case .closed: text = message
        }
        if let detail { text += " — \(detail)" }
        if let constraint { text += " (constraint \(constraint))" }
        if let hint { text += " Hint: \(hint)" }
        return text
    }
}
