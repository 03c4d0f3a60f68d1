import Dispatch
import Foundation
import Logging
import Synchronization

/// A notification sent with `NOTIFY` / `pg_notify`.
public struct PostgresNotification: Sendable, Equatable {
    public var channel: String
    public var payload: String
    /// The server process of the session that sent it.
    public var processID: Int32

    public init(channel: String, payload: String, processID: Int32) {
        self.channel = channel
        self.payload = payload
        self.processID = processID
    }
}

/// Receives `LISTEN`/`NOTIFY` notifications on a dedicated connection and thread.
///
/// A listening session must read from its socket even when nobody is querying, so it cannot be a
/// pooled connection. The listener's thread waits on the socket with `poll()`, waking every
/// `pollInterval` to notice `stop()`; when data arrives, `PQconsumeInput` reads it and
/// `PQnotifies` hands over each notification, which the thread yields to `notifications`.
///
/// When the connection drops, the listener reconnects with capped exponential back-off and issues
/// `LISTEN` again. Notifications sent while it was disconnected are lost — PostgreSQL does not
/// queue them for absent listeners — so treat a notification as a hint to look, never as the data
/// itself, and look again (scan the table) whenever `onListening` is called.
public final class PostgresListener: Sendable {
    /// Capped exponential back-off between reconnection attempts.
    public struct Backoff: Sendable, Equatable {
        public var initial: Duration
        public var maximum: Duration

        public init(initial: Duration = .milliseconds(100), maximum: Duration = .seconds(5)) {
            self.initial = initial
            self.maximum = maximum
        }

        /// The delay before attempt `attempt` (0-based), with ±20% jitter so listeners cut off
        /// together don't all come back in the same millisecond.
        public func delay(forAttempt attempt: Int) -> Duration {
            min(initial * (1 << min(attempt, 30)), maximum) * Double.random(in: 0.8...1.2)
        }
    }

    /// Each notification received on any of the channels, in the order the server sent them.
    /// Finishes after `stop()`. Iterate it from one task only.
    public let notifications: AsyncStream<PostgresNotification>
    private let control: Control

    /// Starts listening on `channels` (exact names; quoted for `LISTEN`).
    ///
    /// Returns at once; the thread connects in the background and keeps trying if the server is
    /// down. `onListening` runs on the listener's thread each time `LISTEN` has been issued — at
    /// start and after every reconnection — which is the moment to catch up on anything missed.
    /// - Parameters:
    ///   - pollInterval: how often the thread wakes while idle, which bounds how long `stop()` takes.
    ///   - healthCheckInterval: after this long without traffic the listener runs `SELECT 1`, since
    ///     a network that silently drops packets never makes the socket readable.
    public init(
        configuration: PostgresConfiguration, channels: [String], backoff: Backoff = Backoff(),
        pollInterval: Duration = .milliseconds(250), healthCheckInterval: Duration = .seconds(30),
        logger: Logger, onListening: @escaping @Sendable () -> Void = {}
    ) throws {
        precondition(!channels.isEmpty, "a listener needs at least one channel")
        let statements = try channels.map { "LISTEN " + (try PostgresIdentifier.quoted($0)) }
        let (stream, continuation) = AsyncStream.makeStream(of: PostgresNotification.self)
        let control = Control()
        self.notifications = stream
        self.control = control
        // A consumer that stops iterating (its task was cancelled) no longer needs the thread.
        continuation.onTermination = { _ in control.requestStop() }

        let loop = Loop(
            configuration: configuration, statements: statements, backoff: backoff,
            pollInterval: pollInterval, healthCheckInterval: healthCheckInterval, logger: logger,
            onListening: onListening, continuation: continuation, control: control)
        let thread = Thread { loop.run() }
        thread.name = "bazaar.postgres.listener"
        thread.start()
    }

    /// Stops the thread, closes its connection and finishes `notifications`; returns once the
    /// thread has ended (within about one `pollInterval`).
    public func stop() async {
        control.requestStop()
        await control.waitUntilExited()
    }

    /// The state the caller's side and the listener thread share, behind a lock.
    private final class Control: Sendable {
        private struct State {
            var stopRequested = false
            var exited = false
            var exitWaiters: [CheckedContinuation<Void, Never>] = []
        }

        private let state = Mutex(State())
        /// Signalled by `requestStop()` so a back-off sleep ends at once.
        private let wakeUp = DispatchSemaphore(value: 0)

        var isStopRequested: Bool { state.withLock { $0.stopRequested } }

        func requestStop() {
            let first = state.withLock { state in
                defer { state.stopRequested = true }
                return !state.stopRequested
            }
            if first { wakeUp.signal() }
        }

        /// Sleeps for `duration` unless a stop is requested first.
        func sleep(_ duration: Duration) {
            let (seconds, attoseconds) = duration.components
            let nanoseconds = Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000)
            _ = wakeUp.wait(timeout: .now() + .nanoseconds(nanoseconds))
        }

        func markExited() {
            let waiters = state.withLock { state in
                state.exited = true
                defer { state.exitWaiters.removeAll() }
                return state.exitWaiters
            }
            for waiter in waiters { waiter.resume() }
        }

        func waitUntilExited() async {
            await withCheckedContinuation { continuation in
                let exited = state.withLock { state in
                    if !state.exited { state.exitWaiters.append(continuation) }
                    return state.exited
                }
                if exited { continuation.resume() }
            }
        }
    }

    /// The listener thread's work. The libpq handle is created, used and closed inside `run()`,
    /// on that one thread, so nothing else can ever touch it.
    private struct Loop: Sendable {
        let configuration: PostgresConfiguration
        let statements: [String]
        let backoff: Backoff
        let pollInterval: Duration
        let healthCheckInterval: Duration
        let logger: Logger
        let onListening: @Sendable () -> Void
        let continuation: AsyncStream<PostgresNotification>.Continuation
        let control: Control

        func run() {
            let libpq = LibPQConnection(configuration: configuration, logger: logger)
            var failedAttempts = 0
            var lastTraffic = ContinuousClock.now
            while !control.isStopRequested {
                if !libpq.isConnected {
                    do {
                        try libpq.connect()
                        for statement in statements { _ = try libpq.execute(statement, []) }
                    } catch {
                        libpq.close()
                        let delay = backoff.delay(forAttempt: failedAttempts)
                        failedAttempts += 1
                        logger.warning(
                            "listener could not connect; retrying",
                            metadata: ["error": "\(error)", "retryIn": "\(delay)"])
                        control.sleep(delay)
                        continue
                    }
                    if failedAttempts > 0 { logger.info("listener reconnected") }
                    failedAttempts = 0
                    lastTraffic = .now
                    onListening()
                }
                switch waitForInput(on: libpq.socket) {
                case .readable:
                    lastTraffic = .now
                    guard libpq.consumeInput(), libpq.checkAlive() else {
                        logger.warning("listener connection lost; reconnecting")
                        libpq.close()
                        continue
                    }
                case .timedOut where ContinuousClock.now - lastTraffic >= healthCheckInterval:
                    lastTraffic = .now
                    do {
                        _ = try libpq.execute("SELECT 1", [])
                    } catch {
                        logger.warning("listener health check failed; reconnecting", metadata: ["error": "\(error)"])
                        libpq.close()
                        continue
                    }
                case .timedOut, .interrupted:
                    break
                }
                while let notification = libpq.nextNotification() {
                    continuation.yield(notification)
                }
            }
            libpq.close()
            continuation.finish()
            control.markExited()
        }

        private enum Wait { case readable, timedOut, interrupted }

        /// `poll()` on the connection's socket for at most `pollInterval`. A hang-up or socket error
        /// counts as readable: `PQconsumeInput` then reports the connection lost.
        private func waitForInput(on socket: Int32) -> Wait {
            var descriptor = pollfd(fd: socket, events: Int16(POLLIN), revents: 0)
            let milliseconds = Int32(pollInterval / .milliseconds(1))
            let result = poll(&descriptor, 1, milliseconds)
            if result > 0 { return .readable }
            return result == 0 ? .timedOut : .interrupted
        }
    }
}
