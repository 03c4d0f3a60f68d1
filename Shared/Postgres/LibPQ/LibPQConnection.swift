import CLibPQ
import Foundation
import Logging

// Every libpq call of the module lives in this file, so the rest of the module is plain Swift and
// a reader sees in one place which C functions we use and who frees what.
//
// Nothing here is thread-safe, and nothing here needs to be: a `LibPQConnection` is confined to one
// owner at a time — the `PostgresConnection` actor (whose executor is its own serial queue) or the
// listener's dedicated thread. That is why the type is deliberately not `Sendable`.

/// A libpq connection handle (`PGconn *`). Calls block the calling thread.
final class LibPQConnection {
    private var handle: OpaquePointer?
    private let configuration: PostgresConfiguration
    private let notices: NoticeSink
    /// Statements prepared in this session, by text and parameter types: the server parses and
    /// plans each once per session instead of at every call. A new session starts empty.
    private var preparedStatements: [PreparedKey: String] = [:]
    /// Past this many, further statements run unprepared (a process that builds SQL for ever more
    /// schemas, like a test suite, must not grow the server's memory without bound).
    static let preparedStatementLimit = 256

    private struct PreparedKey: Hashable {
        var sql: String
        var types: [UInt32]
    }

    init(configuration: PostgresConfiguration, logger: Logger) {
        self.configuration = configuration
        self.notices = NoticeSink(logger: logger)
    }

    deinit { close() }

    /// Opens the connection with `PQconnectdbParams` (never the `PQsetdb` macros).
    func connect() throws {
        close()
        let parameters = configuration.libpqParameters
        let connection = withCStringArray(parameters.map(\.keyword)) { keywords in
            withCStringArray(parameters.map(\.value)) { values in
                PQconnectdbParams(keywords, values, 0)
            }
        }
        guard let connection else {
            throw PostgresError(.connectionFailed, message: "libpq could not allocate a connection")
        }
        guard PQstatus(connection) == CONNECTION_OK else {
            // libpq's message names the host, port, user and reason — never the password.
            let message = Self.trimmed(PQerrorMessage(connection))
            PQfinish(connection)
            throw PostgresError(.connectionFailed, message: message)
        }
        // Without a receiver libpq prints notices (NOTICE, WARNING, an idle session's FATAL) to
        // stderr. The sink lives as long as this object, which outlives the PGconn.
        PQsetNoticeReceiver(connection, noticeReceiver, Unmanaged.passUnretained(notices).toOpaque())
        notices.sessionEnding = false
        preparedStatements = [:]
        handle = connection
    }

    /// Re-establishes a connection libpq reports as broken (`PQreset` reconnects with the same
    /// parameters, so the session settings in `options` come back with it).
    func reset() throws {
        guard let handle else { return try connect() }
        PQreset(handle)
        notices.sessionEnding = false
        preparedStatements = [:]
        guard PQstatus(handle) == CONNECTION_OK else {
            throw PostgresError(.connectionFailed, message: errorMessage)
        }
    }

    func close() {
        if let handle { PQfinish(handle) }
        handle = nil
    }

    /// False once libpq saw the server or network go away. It only notices while it reads, so a
    /// connection cut while idle looks fine here until `checkAlive()` or a statement.
    var isConnected: Bool {
        guard let handle else { return false }
        return PQstatus(handle) == CONNECTION_OK
    }

    /// Reads whatever the server already sent, without blocking (libpq keeps its socket
    /// non-blocking). Returns false when that shows the connection is gone.
    @discardableResult
    func consumeInput() -> Bool {
        guard let handle else { return false }
        return PQconsumeInput(handle) == 1 && PQstatus(handle) == CONNECTION_OK
    }

    /// Whether the connection is still usable, judged from everything the server already sent.
    ///
    /// A terminated backend sends a FATAL message and then closes its socket. One
    /// `PQconsumeInput` may read the message but not yet the end of the stream, so we read while
    /// the socket stays readable (a few rounds at most), and also believe the FATAL itself.
    func checkAlive() -> Bool {
        guard let handle else { return false }
        for _ in 0..<4 {
            var descriptor = pollfd(fd: PQsocket(handle), events: Int16(POLLIN), revents: 0)
            guard poll(&descriptor, 1, 0) > 0 else { break }
            guard consumeInput() else { return false }
            // Parses what was read, which hands an idle session's FATAL to the notice receiver.
            _ = PQisBusy(handle)
        }
        return isConnected && !notices.sessionEnding
    }

    /// The socket to `poll()` for notifications; -1 when not connected.
    var socket: Int32 {
        guard let handle else { return -1 }
        return PQsocket(handle)
    }

    /// The server process serving this connection (what `pg_terminate_backend` takes).
    var backendPID: Int32 {
        guard let handle else { return 0 }
        return PQbackendPID(handle)
    }

    /// Whether the session is inside a transaction block (between BEGIN and COMMIT/ROLLBACK).
    var isInTransaction: Bool {
        guard let handle else { return false }
        let status = PQtransactionStatus(handle)
        return status == PQTRANS_INTRANS || status == PQTRANS_INERROR
    }

    /// Whether the transaction block has failed: every statement until ROLLBACK is refused, and
    /// COMMIT would roll back.
    var isInFailedTransaction: Bool {
        guard let handle else { return false }
        return PQtransactionStatus(handle) == PQTRANS_INERROR
    }

    /// Runs one statement with `$1…$n` parameters, prepared once per session (`PQprepare`, then
    /// `PQexecPrepared`); results come back in text format.
    func execute(_ sql: String, _ parameters: [PostgresBinding]) throws -> PostgresQueryResult {
        let handle = try connectedHandle()
        try Self.checkNoNUL(in: parameters)
        let types = parameters.map { $0.type.oid }
        let name = try preparedStatement(sql, types: types, handle)
        return try Self.withParameterBuffers(parameters) { count, values, lengths, formats in
            if let name {
                return try consume(PQexecPrepared(handle, name, count, values, lengths, formats, 0 /* text results */))
            }
            return try consume(PQexecParams(handle, sql, count, types, values, lengths, formats, 0 /* text results */))
        }
    }

    /// Runs `statements` in order in one round trip, with libpq's pipeline mode: all are sent,
    /// then one Sync, then the results are read. Returns each statement's result, in order.
    ///
    /// If one fails, the server skips the rest up to the Sync, and its error is thrown; inside a
    /// transaction block the transaction has then failed, as it would have one statement at a time.
    func execute(pipeline statements: [PipelinedStatement]) throws -> [PostgresQueryResult] {
        if statements.count == 1, let only = statements.first { return [try execute(only.sql, only.parameters)] }
        if statements.isEmpty { return [] }
        let handle = try connectedHandle()
        for statement in statements { try Self.checkNoNUL(in: statement.parameters) }

        // What was sent, in order, so each result is matched with its statement. A statement new
        // to this session is prepared within the pipeline and remembered once that succeeded.
        enum Sent { case prepare(PreparedKey, name: String), statement }
        var sent: [Sent] = []
        var preparing: [PreparedKey: String] = [:]
        guard PQenterPipelineMode(handle) == 1 else {
            throw PostgresError(isConnected ? .unexpectedResult : .connectionLost, message: errorMessage)
        }
        do {
            for statement in statements {
                let types = statement.parameters.map { $0.type.oid }
                let key = PreparedKey(sql: statement.sql, types: types)
                var name = preparedStatements[key] ?? preparing[key]
                if name == nil, preparedStatements.count + preparing.count < Self.preparedStatementLimit {
                    let newName = "bazaar_\(preparedStatements.count + preparing.count + 1)"
                    try sending(PQsendPrepare(handle, newName, statement.sql, Int32(types.count), types))
                    preparing[key] = newName
                    sent.append(.prepare(key, name: newName))
                    name = newName
                }
                try Self.withParameterBuffers(statement.parameters) { count, values, lengths, formats in
                    if let name {
                        try sending(PQsendQueryPrepared(handle, name, count, values, lengths, formats, 0))
                    } else {
                        try sending(PQsendQueryParams(handle, statement.sql, count, types, values, lengths, formats, 0))
                    }
                }
                sent.append(.statement)
            }
            try sending(PQpipelineSync(handle))
        } catch {
            abandonPipeline()
            throw error
        }

        var results: [PostgresQueryResult] = []
        var firstError: PostgresError?
        for item in sent {
            guard let result = PQgetResult(handle) else { throw lostInPipeline() }
            let status = PQresultStatus(result)
            switch status {
            case PGRES_TUPLES_OK, PGRES_COMMAND_OK, PGRES_EMPTY_QUERY:
                if case .prepare(let key, let name) = item {
                    preparedStatements[key] = name
                } else {
                    results.append(Self.copy(result))
                }
            case PGRES_PIPELINE_ABORTED:
                break  // skipped after an earlier error, which is the one reported
            case PGRES_FATAL_ERROR, PGRES_NONFATAL_ERROR, PGRES_BAD_RESPONSE:
                firstError = firstError ?? serverError(from: result)
            default:
                firstError = firstError ?? PostgresError(
                    .unexpectedResult, message: "unsupported result status \(String(cString: PQresStatus(status)))")
            }
            PQclear(result)
            // Each statement's results end with a NULL.
            while let extra = PQgetResult(handle) { PQclear(extra) }
        }
        guard let sync = PQgetResult(handle), PQresultStatus(sync) == PGRES_PIPELINE_SYNC else { throw lostInPipeline() }
        PQclear(sync)
        guard PQexitPipelineMode(handle) == 1 else { throw lostInPipeline() }
        if let firstError { throw firstError }
        return results
    }

    /// Fails when libpq could not queue or send a message of a pipeline.
    private func sending(_ status: Int32) throws {
        guard status == 1 else {
            throw PostgresError(isConnected ? .unexpectedResult : .connectionLost, message: errorMessage)
        }
    }

    /// A pipeline whose results can't all be read leaves the session in no known state: it is
    /// closed, and the pool's next checkout opens a new one.
    private func lostInPipeline() -> PostgresError {
        let error = PostgresError(.connectionLost, message: "the connection failed during a pipeline: \(errorMessage)")
        abandonPipeline()
        return error
    }

    private func abandonPipeline() {
        close()
    }

    private static func checkNoNUL(in parameters: [PostgresBinding]) throws {
        for (index, parameter) in parameters.enumerated() {
            if case .text(let text) = parameter.value, text.utf8.contains(0) {
                // libpq takes text parameters as C strings: a NUL would silently cut the value.
                throw PostgresError(
                    .invalidParameter, message: "parameter $\(index + 1) contains a NUL character")
            }
        }
    }

    /// Calls `body` with the parallel C arrays libpq wants (count, values, lengths, formats). The
    /// value buffers are copies made with malloc/strdup, freed when `body` returns: libpq copies
    /// them into its output buffer during the call.
    private static func withParameterBuffers<Result>(
        _ parameters: [PostgresBinding],
        _ body: (Int32, [UnsafePointer<CChar>?], [Int32], [Int32]) throws -> Result
    ) rethrows -> Result {
        let formats = parameters.map { parameter -> Int32 in
            if case .binary = parameter.value { return 1 } else { return 0 }
        }
        let lengths = parameters.map { parameter -> Int32 in
            if case .binary(let bytes) = parameter.value { return Int32(bytes.count) } else { return 0 }
        }
        let buffers: [UnsafeMutablePointer<CChar>?] = parameters.map { parameter in
            switch parameter.value {
            case .null: return nil
            case .text(let text): return strdup(text)
            case .binary(let bytes):
                // Never NULL, even when empty: a NULL value pointer would mean SQL NULL.
                let buffer = malloc(max(bytes.count, 1))!
                bytes.withUnsafeBytes { raw in
                    if let source = raw.baseAddress { buffer.copyMemory(from: source, byteCount: raw.count) }
                }
                return buffer.assumingMemoryBound(to: CChar.self)
            }
        }
        defer { buffers.forEach { free($0) } }
        return try body(Int32(parameters.count), buffers.map { UnsafePointer($0) }, lengths, formats)
    }

    /// The name of `sql` prepared in this session, preparing it on first use; nil once the session
    /// holds `preparedStatementLimit` statements. A statement that fails to prepare throws the
    /// server's error (the same one running it would have given) and is not remembered.
    private func preparedStatement(_ sql: String, types: [UInt32], _ handle: OpaquePointer) throws -> String? {
        let key = PreparedKey(sql: sql, types: types)
        if let name = preparedStatements[key] { return name }
        guard preparedStatements.count < Self.preparedStatementLimit else { return nil }
        let name = "bazaar_\(preparedStatements.count + 1)"
        _ = try consume(PQprepare(handle, name, sql, Int32(types.count), types))
        preparedStatements[key] = name
        return name
    }

    /// Runs a script of several statements with `PQexec`. Only for trusted SQL from the repository
    /// (migrations): it takes no parameters.
    func executeScript(_ sql: String) throws {
        let handle = try connectedHandle()
        _ = try consume(PQexec(handle, sql))
    }

    /// The next notification already received (after `consumeInput()`), if any.
    func nextNotification() -> PostgresNotification? {
        guard let handle, let notify = PQnotifies(handle) else { return nil }
        defer { PQfreemem(notify) }
        return PostgresNotification(
            channel: String(cString: notify.pointee.relname),
            payload: String(cString: notify.pointee.extra),
            processID: notify.pointee.be_pid)
    }

    // MARK: - Results

    private func connectedHandle() throws -> OpaquePointer {
        guard let handle else { throw PostgresError(.connectionLost, message: "not connected") }
        return handle
    }

    private var errorMessage: String {
        guard let handle else { return "not connected" }
        return Self.trimmed(PQerrorMessage(handle))
    }

    /// Copies a `PGresult` into Swift values and frees it, or turns it into a `PostgresError`.
    private func consume(_ result: OpaquePointer?) throws -> PostgresQueryResult {
        guard let result else {
            // NULL: out of memory, or the query could not even be sent.
            throw PostgresError(isConnected ? .unexpectedResult : .connectionLost, message: errorMessage)
        }
        defer { PQclear(result) }
        switch PQresultStatus(result) {
        case PGRES_TUPLES_OK, PGRES_COMMAND_OK, PGRES_EMPTY_QUERY:
            return Self.copy(result)
        case PGRES_FATAL_ERROR, PGRES_NONFATAL_ERROR, PGRES_BAD_RESPONSE:
            throw serverError(from: result)
        case let status:
            throw PostgresError(
                .unexpectedResult, message: "unsupported result status \(String(cString: PQresStatus(status)))")
        }
    }

    private func serverError(from result: OpaquePointer) -> PostgresError {
        func field(_ code: Character) -> String? {
            guard let value = PQresultErrorField(result, Int32(code.asciiValue!)) else { return nil }
            return String(cString: value)
        }
        // A statement that failed because the server or network went away leaves libpq in
        // CONNECTION_BAD; say so, so the caller knows a retry needs another connection (the
        // pool's next checkout re-establishes this one).
        let kind: PostgresError.Kind = isConnected ? .server : .connectionLost
        // The PG_DIAG_* codes are C character macros: 'C' is the SQLSTATE, 'M' the primary message…
        return PostgresError(
            kind,
            message: field("M") ?? Self.trimmed(PQresultErrorMessage(result)),
            sqlState: field("C"), detail: field("D"), hint: field("H"), constraint: field("n"),
            schema: field("s"), table: field("t"), column: field("c"))
    }

    private static func copy(_ result: OpaquePointer) -> PostgresQueryResult {
        let columnCount = Int(PQnfields(result))
        let rowCount = Int(PQntuples(result))
        let columns = PostgresColumns(
            names: (0..<columnCount).map { String(cString: PQfname(result, Int32($0))) },
            types: (0..<columnCount).map { PostgresType(oid: PQftype(result, Int32($0))) })
        let rows = (0..<rowCount).map { row in
            PostgresRow(
                columns: columns,
                values: (0..<columnCount).map { column -> String? in
                    if PQgetisnull(result, Int32(row), Int32(column)) == 1 { return nil }
                    return String(cString: PQgetvalue(result, Int32(row), Int32(column)))
                })
        }
        // PQcmdTuples is "" for statements that affect no rows by nature (CREATE, BEGIN…).
        let affected = Int(String(cString: PQcmdTuples(result))) ?? 0
        return PostgresQueryResult(rows: rows, affectedRows: affected)
    }

    private static func trimmed(_ message: UnsafePointer<CChar>?) -> String {
        guard let message else { return "unknown libpq error" }
        return String(cString: message).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// Receives libpq's notices and logs them. Confined like its `LibPQConnection`: libpq calls the
/// receiver only from inside the connection's own calls.
private final class NoticeSink {
    let logger: Logger
    /// Set when the server sent FATAL outside a statement (`pg_terminate_backend`, shutdown): the
    /// session is ending even if libpq has not yet seen the socket close.
    var sessionEnding = false

    init(logger: Logger) { self.logger = logger }

    func receive(_ result: OpaquePointer) {
        let severity = PQresultErrorField(result, Int32(Character("V").asciiValue!)).map { String(cString: $0) } ?? ""
        let message = String(cString: PQresultErrorMessage(result)).trimmingCharacters(in: .whitespacesAndNewlines)
        switch severity {
        case "FATAL", "PANIC":
            sessionEnding = true
            logger.warning("PostgreSQL is ending the session", metadata: ["notice": "\(message)"])
        case "WARNING":
            logger.warning("PostgreSQL warning", metadata: ["notice": "\(message)"])
        default:
            logger.debug("PostgreSQL notice", metadata: ["notice": "\(message)"])
        }
    }
}

/// libpq's notice callback: a C function pointer, so it cannot capture; `argument` is the sink.
private func noticeReceiver(_ argument: UnsafeMutableRawPointer?, _ result: OpaquePointer?) {
    guard let argument, let result else { return }
    Unmanaged<NoticeSink>.fromOpaque(argument).takeUnretainedValue().receive(result)
}

/// One statement of a pipeline (`LibPQConnection.execute(pipeline:)`).
struct PipelinedStatement {
    var sql: String
    var parameters: [PostgresBinding]
}

/// What one statement returned, copied out of libpq's `PGresult`.
struct PostgresQueryResult: Sendable {
    var rows: [PostgresRow]
    var affectedRows: Int
}

/// Calls `body` with a NULL-terminated `const char *const *` array, as `PQconnectdbParams` takes.
private func withCStringArray<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
    let copies = strings.map { strdup($0) }
    defer { copies.forEach { free($0) } }
    let pointers = copies.map { UnsafePointer($0) } + [nil]
    return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}
