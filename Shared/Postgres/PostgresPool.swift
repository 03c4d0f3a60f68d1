import Logging

/// A fixed-size set of connections shared by a service's tasks.
///
/// Connections are opened lazily, up to `maxConnections`. When all are busy, callers wait in
/// FIFO order for the next one returned. A connection found broken at checkout (the server
/// restarted, an operator terminated its backend) is re-established before use; a statement that
/// fails because its connection dropped throws `PostgresError` of kind `connectionLost`, and
/// whether to retry is the caller's decision, since only it knows whether the work is idempotent.
public actor PostgresPool {
    public let configuration: PostgresConfiguration
    public let maxConnections: Int
    private let logger: Logger

    /// Connections not in use, the most recently returned last (it is the warmest).
    private var idle: [PostgresConnection] = []
    /// Connections open or being opened, in use or idle.
    private var openCount = 0
    /// Callers waiting for a connection, oldest first. A waiter is resumed with a connection, or
    /// with `nil`, meaning "a slot is free: open a connection yourself".
    private var waiters: [(id: Int, continuation: CheckedContinuation<PostgresConnection?, any Error>)] = []
    private var nextWaiterID = 0
    private var isShutDown = false

    public init(configuration: PostgresConfiguration, maxConnections: Int = 4, logger: Logger) {
        precondition(maxConnections > 0, "a pool needs at least one connection")
        self.configuration = configuration
        self.maxConnections = maxConnections
        self.logger = logger
    }

    /// How the connections are used at this moment (for metrics).
    public struct Usage: Sendable {
        /// Connections open or being opened.
        public var open: Int
        public var idle: Int
        /// Callers waiting for a connection: a pool too small for the load.
        public var waiting: Int
        public var maximum: Int
        public var inUse: Int { open - idle }
    }

    public var usage: Usage { Usage(open: openCount, idle: idle.count, waiting: waiters.count, maximum: maxConnections) }

    /// Lends a connection to `body` and takes it back afterwards, even when `body` throws.
    public nonisolated func withConnection<Result: Sendable>(
        _ body: (PostgresConnection) async throws -> Result
    ) async throws -> Result {
        let connection = try await checkOut()
        do {
            let result = try await body(connection)
            await checkIn(connection)
            return result
        } catch {
            await checkIn(connection)
            throw error
        }
    }

    /// Runs one statement on a pooled connection and returns its rows.
    public nonisolated func query(_ sql: String, _ parameters: any PostgresBindable...) async throws -> [PostgresRow] {
        try await query(sql, parameters: parameters)
    }

    /// Runs one statement with a list of parameters built at run time.
    public nonisolated func query(_ sql: String, parameters: [any PostgresBindable]) async throws -> [PostgresRow] {
        try await withConnection { try await $0.query(sql, parameters: parameters) }
    }

    /// Runs one statement and returns how many rows it inserted, updated or deleted.
    @discardableResult
    public nonisolated func execute(_ sql: String, _ parameters: any PostgresBindable...) async throws -> Int {
        try await execute(sql, parameters: parameters)
    }

    /// Runs one statement with a list of parameters built at run time; returns the affected rows.
    @discardableResult
    public nonisolated func execute(_ sql: String, parameters: [any PostgresBindable]) async throws -> Int {
        try await withConnection { try await $0.execute(sql, parameters: parameters) }
    }

    /// Sends a notification (`SELECT pg_notify($1, $2)`).
    public nonisolated func notify(channel: String, payload: String = "") async throws {
        try await withConnection { try await $0.notify(channel: channel, payload: payload) }
    }

    /// Runs `body` in a transaction on a pooled connection: see `PostgresConnection.transaction`.
    /// The body is synchronous so that nothing can interleave with, or stall, the open transaction.
    public nonisolated func transaction<Result: Sendable>(
        _ body: @Sendable (PostgresTransaction) throws -> Result
    ) async throws -> Result {
        try await withConnection { try await $0.transaction(body) }
    }

    /// Closes idle connections and fails waiting callers; connections in use are closed when they
    /// come back. Later calls fail with `PostgresError.Kind.closed`.
    public func shutdown() async {
        guard !isShutDown else { return }
        isShutDown = true
        for waiter in waiters {
            waiter.continuation.resume(throwing: PostgresError(.closed, message: "the pool was shut down"))
        }
        waiters.removeAll()
        let closing = idle
        idle.removeAll()
        openCount -= closing.count
        for connection in closing { await connection.close() }
    }

    // MARK: - Checkout

    private func checkOut() async throws -> PostgresConnection {
        guard !isShutDown else { throw PostgresError(.closed, message: "the pool was shut down") }
        if let connection = idle.popLast() {
            return try await healthy(connection)
        }
        if openCount < maxConnections {
            // Count the slot before the await, so concurrent callers never open too many.
            openCount += 1
            return try await openConnection()
        }
        if let connection = try await waitForConnection() {
            return try await healthy(connection)
        }
        return try await openConnection()  // a slot was handed over, already counted
    }

    /// Opens a connection in a slot already counted in `openCount`.
    private func openConnection() async throws -> PostgresConnection {
        do {
            return try await PostgresConnection.connect(configuration: configuration, logger: logger)
        } catch {
            releaseSlot()
            throw error
        }
    }

    /// Re-establishes a connection that was lost while idle; drops it if that fails.
    private func healthy(_ connection: PostgresConnection) async throws -> PostgresConnection {
        do {
            try await connection.reconnectIfNeeded()
            return connection
        } catch {
            await connection.close()
            releaseSlot()
            throw error
        }
    }

    private func waitForConnection() async throws -> PostgresConnection? {
        let id = nextWaiterID
        nextWaiterID += 1
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                waiters.append((id, continuation))
            }
        } onCancel: {
            Task { await self.cancelWaiter(id) }
        }
    }

    private func cancelWaiter(_ id: Int) {
        guard let index = waiters.firstIndex(where: { $0.id == id }) else { return }  // already served
        waiters.remove(at: index).continuation.resume(throwing: CancellationError())
    }

    private func checkIn(_ connection: PostgresConnection) async {
        if isShutDown {
            openCount -= 1
            await connection.close()
        } else if !waiters.isEmpty {
            waiters.removeFirst().continuation.resume(returning: connection)
        } else {
            idle.append(connection)
        }
    }

    /// A connection went away for good: its slot goes to the oldest waiter, if any.
    private func releaseSlot() {
        if !waiters.isEmpty {
            waiters.removeFirst().continuation.resume(returning: nil)  // it opens its own
        } else {
            openCount -= 1
        }
    }
}
