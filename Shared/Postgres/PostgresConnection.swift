import Logging

/// One PostgreSQL session over libpq.
///
/// libpq's connection handle is not thread-safe and its calls block, so the handle lives inside
/// this actor, and the actor runs on its own serial dispatch queue (`SerialQueueExecutor`) rather
/// than Swift's cooperative pool. Every method is synchronous inside the actor: called with
/// `await` from outside, it hops onto the queue, makes its libpq calls back to back, and returns.
/// No method awaits between two libpq calls, so actor reentrancy can never interleave another
/// task's statements with them.
///
/// Most code uses a `PostgresPool`; a connection of its own suits a tool or a test.
public actor PostgresConnection {
    private let executor: SerialQueueExecutor
    private let libpq: LibPQConnection
    public let configuration: PostgresConfiguration
    private let logger: Logger

    public nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    private init(configuration: PostgresConfiguration, logger: Logger) {
        self.executor = SerialQueueExecutor(label: "bazaar.postgres.\(configuration.applicationName)")
        self.libpq = LibPQConnection(configuration: configuration, logger: logger)
        self.configuration = configuration
        self.logger = logger
    }

    /// Opens a connection (with `PQconnectdbParams`, on the connection's own queue).
    public static func connect(
        configuration: PostgresConfiguration, logger: Logger
    ) async throws -> PostgresConnection {
        let connection = PostgresConnection(configuration: configuration, logger: logger)
        try await connection.open()
        return connection
    }

    private func open() throws {
        try libpq.connect()
        logger.debug("connected to PostgreSQL", metadata: ["url": "\(configuration)", "pid": "\(libpq.backendPID)"])
    }

    /// Runs one statement and returns its rows. Values are bound to `$1…$n`, never spliced into
    /// the SQL.
    public func query(_ sql: String, _ parameters: any PostgresBindable...) throws -> [PostgresRow] {
        try query(sql, parameters: parameters)
    }

    /// Runs one statement with a list of parameters built at run time.
    public func query(_ sql: String, parameters: [any PostgresBindable]) throws -> [PostgresRow] {
        try run(sql, parameters).rows
    }

    /// Runs one statement and returns how many rows it inserted, updated or deleted.
    @discardableResult
    public func execute(_ sql: String, _ parameters: any PostgresBindable...) throws -> Int {
        try execute(sql, parameters: parameters)
    }

    /// Runs one statement with a list of parameters built at run time; returns the affected rows.
    @discardableResult
    public func execute(_ sql: String, parameters: [any PostgresBindable]) throws -> Int {
        try run(sql, parameters).affectedRows
    }

    /// Sends a notification (`SELECT pg_notify($1, $2)`) to the listeners of `channel`.
    public func notify(channel: String, payload: String = "") throws {
        _ = try run("SELECT pg_notify($1, $2)", [channel, payload])
    }

    /// Runs `body` in a transaction: BEGIN before, COMMIT when it returns, ROLLBACK when it throws.
    ///
    /// The body is synchronous on purpose. It runs on this connection's queue with the actor held
    /// from BEGIN to COMMIT, so no other task's statement can slip into the transaction, and no
    /// `await` can hold it open while the task waits on something else (a lock held across an
    /// HTTP call is how deadlocks and pool starvation start). Do the async work before or after.
    ///
    /// Round trips are what a transaction costs most, so BEGIN travels with the body's first
    /// statement, and statements the body `enqueue`s travel with the next one it waits for, or
    /// with COMMIT (see `PostgresTransaction.enqueue`). A body that runs no statement costs none.
    public func transaction<Result: Sendable>(
        _ body: @Sendable (PostgresTransaction) throws -> Result
    ) throws -> Result {
        let pending = PendingStatements(first: PipelinedStatement(sql: "BEGIN", parameters: []))
        let result: Result
        do {
            result = try body(PostgresTransaction(libpq: libpq, logger: logger, pending: pending))
        } catch {
            rollBack(after: error)
            throw error
        }
        // Nothing was sent, nothing is queued but the BEGIN: there is no transaction to end.
        guard pending.began || pending.statements.count > 1 else {
            pending.runAfterCommit()
            return result
        }
        // A body that caught an SQL error and returned anyway leaves the transaction aborted, and
        // COMMIT would then quietly roll back: refuse to report success for writes that are gone.
        if libpq.isInFailedTransaction {
            rollBack(after: PostgresError(.unexpectedResult, message: "transaction aborted"))
            throw PostgresError(
                .unexpectedResult,
                message: "the transaction was aborted by an earlier error its body caught; nothing was committed")
        }
        // A failed COMMIT (a deferred constraint, a serialization failure) has already ended the
        // transaction on the server: the error is all that is left to report. A queued statement
        // that fails makes the server skip the COMMIT: that transaction is rolled back here.
        do {
            _ = try libpq.execute(pipeline: pending.take() + [PipelinedStatement(sql: "COMMIT", parameters: [])])
        } catch {
            rollBack(after: error)
            throw error
        }
        pending.runAfterCommit()
        return result
    }

    private func rollBack(after error: any Error) {
        // Nothing to roll back when the session ended (the server rolled back) or the body's
        // SQL already ended the transaction.
        guard libpq.isConnected, libpq.isInTransaction else { return }
        do {
            _ = try libpq.execute("ROLLBACK", [])
        } catch let rollbackError {
            logger.warning(
                "ROLLBACK failed after an error in a transaction",
                metadata: ["error": "\(error)", "rollbackError": "\(rollbackError)"])
        }
    }

    /// The server process of this session, as `pg_stat_activity.pid` and `pg_terminate_backend`
    /// know it.
    public var backendPID: Int32 { libpq.backendPID }

    /// Re-establishes the session if it was lost (libpq's `PQstatus` is CONNECTION_BAD, after
    /// reading whatever the server already sent, so a connection cut while idle is noticed too).
    /// Returns whether it reconnected. Session state — SET, temporary tables, LISTEN — is gone.
    @discardableResult
    public func reconnectIfNeeded() throws -> Bool {
        if libpq.checkAlive() { return false }
        logger.info("PostgreSQL connection lost; reconnecting", metadata: ["url": "\(configuration)"])
        try libpq.reset()
        return true
    }

    /// Closes the session (`PQfinish`). Later statements fail with `connectionLost`.
    public func close() {
        libpq.close()
    }

    private func run(_ sql: String, _ parameters: [any PostgresBindable]) throws -> PostgresQueryResult {
        logger.trace("statement", metadata: ["sql": "\(sql)"])
        return try libpq.execute(sql, parameters.map(\.postgresBinding))
    }
}

/// The statements of one transaction, handed to the body of `transaction { tx in … }`.
///
/// Not `Sendable` and only valid inside the body: it uses the connection's handle directly, which
/// is safe only because the body runs synchronously on the connection's queue.
public struct PostgresTransaction {
    let libpq: LibPQConnection
    let logger: Logger
    let pending: PendingStatements

    /// Runs one statement and returns its rows.
    public func query(_ sql: String, _ parameters: any PostgresBindable...) throws -> [PostgresRow] {
        try query(sql, parameters: parameters)
    }

    /// Runs one statement with a list of parameters built at run time.
    public func query(_ sql: String, parameters: [any PostgresBindable]) throws -> [PostgresRow] {
        try run(sql, parameters).rows
    }

    /// Runs one statement and returns how many rows it inserted, updated or deleted.
    @discardableResult
    public func execute(_ sql: String, _ parameters: any PostgresBindable...) throws -> Int {
        try execute(sql, parameters: parameters)
    }

    /// Runs one statement with a list of parameters built at run time; returns the affected rows.
    @discardableResult
    public func execute(_ sql: String, parameters: [any PostgresBindable]) throws -> Int {
        try run(sql, parameters).affectedRows
    }

    /// Runs several statements in one round trip (after what is queued) and returns how many
    /// rows each inserted, updated or deleted, in order. The first error is thrown.
    public func execute(each statements: [PostgresStatement]) throws -> [Int] {
        guard !statements.isEmpty else { return [] }
        return try run(each: statements).map(\.affectedRows)
    }

    /// Runs several statements in one round trip (after what is queued) and returns the rows of
    /// each, in order: reads that don't depend on one another need not wait for one another.
    public func query(each statements: [PostgresStatement]) throws -> [[PostgresRow]] {
        guard !statements.isEmpty else { return [] }
        return try run(each: statements).map(\.rows)
    }

    /// Queues a statement whose result the body does not need (a write, a lock, a SET LOCAL): it
    /// is sent with the next statement the body waits for, or with COMMIT, in one round trip
    /// (libpq's pipeline mode), and runs in the order it was written.
    ///
    /// Its error, if it fails, is thrown by that later call or by the commit, and the whole
    /// transaction rolls back: what was queued is never half applied. Use `execute` when the body
    /// must know at once whether a statement worked, or how many rows it changed.
    public func enqueue(_ sql: String, _ parameters: any PostgresBindable...) {
        enqueue(sql, parameters: parameters)
    }

    /// Queues a statement with a list of parameters built at run time.
    public func enqueue(_ sql: String, parameters: [any PostgresBindable]) {
        logger.trace("statement (queued)", metadata: ["sql": "\(sql)"])
        pending.statements.append(PipelinedStatement(sql: sql, parameters: parameters.map(\.postgresBinding)))
    }

    /// Runs `action` once the transaction has committed, never if it rolls back: for what must
    /// not happen before the data is there for others to see, such as waking a reader of it.
    /// Actions run in order on the connection's queue, right after COMMIT: keep them short.
    public func afterCommit(_ action: @escaping @Sendable () -> Void) {
        pending.afterCommit.append(action)
    }

    /// Queues a notification; PostgreSQL delivers it only if and when the transaction commits,
    /// which is what makes NOTIFY safe to pair with an outbox row.
    public func notify(channel: String, payload: String = "") {
        enqueue("SELECT pg_notify($1, $2)", channel, payload)
    }

    /// Runs a script of several statements without parameters (`PQexec`). Only for trusted SQL
    /// shipped with the code, such as migrations: nothing from outside may reach it.
    func executeScript(_ sql: String) throws {
        try flush()
        try libpq.executeScript(sql)
    }

    /// Whether the session is still inside the transaction block (a script could have ended it).
    var isInTransaction: Bool { libpq.isInTransaction }

    /// Sends what is queued, BEGIN included, and waits for it.
    private func flush() throws {
        guard !pending.statements.isEmpty else { return }
        _ = try libpq.execute(pipeline: pending.take())
    }

    /// The queued statements, then these, in one round trip; returns the results of these.
    private func run(each statements: [PostgresStatement]) throws -> [PostgresQueryResult] {
        for statement in statements { logger.trace("statement", metadata: ["sql": "\(statement.sql)"]) }
        let sent = pending.take() + statements.map {
            PipelinedStatement(sql: $0.sql, parameters: $0.parameters.map(\.postgresBinding))
        }
        return Array(try libpq.execute(pipeline: sent).suffix(statements.count))
    }

    private func run(_ sql: String, _ parameters: [any PostgresBindable]) throws -> PostgresQueryResult {
        try run(each: [PostgresStatement(sql: sql, parameters: parameters)])[0]
    }
}

/// A statement and its parameters, for `PostgresTransaction.query(each:)` and `execute(each:)`.
public struct PostgresStatement {
    public var sql: String
    public var parameters: [any PostgresBindable]

    public init(_ sql: String, _ parameters: any PostgresBindable...) {
        self.init(sql: sql, parameters: parameters)
    }

    public init(sql: String, parameters: [any PostgresBindable]) {
        self.sql = sql
        self.parameters = parameters
    }
}

/// What a transaction has queued and not sent yet: at first its BEGIN.
final class PendingStatements {
    var statements: [PipelinedStatement]
    /// Whether BEGIN has gone to the server (so there is a transaction to end).
    private(set) var began = false

    /// What `PostgresTransaction.afterCommit` asked for, in order.
    var afterCommit: [@Sendable () -> Void] = []

    init(first: PipelinedStatement) { statements = [first] }

    func runAfterCommit() {
        afterCommit.forEach { $0() }
    }

    /// The queued statements, in order, leaving none.
    func take() -> [PipelinedStatement] {
        began = true
        defer { statements = [] }
        return statements
    }
}
