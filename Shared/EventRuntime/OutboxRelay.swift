import AMQP
import Contracts
import Foundation
import Logging
import Postgres
import Synchronization

/// Publishes a service's outbox to the broker, in outbox order, with publisher confirms.
///
/// How it keeps the outbox's promises:
/// - **Nothing lost.** A row is marked published only after the broker confirmed it. A crash
///   between the confirm and the mark publishes the row again on restart: consumers deduplicate
///   through their inbox, so at-least-once publishing is enough. For the same reason the mark is
///   committed without waiting for the disk (`synchronous_commit = off` on the relay's session):
///   a database crash may forget it, and the row goes out again.
/// - **One relay at a time.** With several instances of a service running, the relays elect a
///   leader with a session-level advisory lock; only the leader publishes, so events leave in
///   outbox order (the order of insertion; a refused row is overtaken while it waits), or, for
///   events handed over by commits (below), in the order of those commits. If the
///   leader's process or session dies, Postgres releases the lock and a standby takes over
///   within a poll interval. Leadership shows when the relay reads or marks rows on its session,
///   so a leader that lost it may publish a few events more (those handed over since its last
///   mark): duplicates, which inboxes absorb.
/// - **Prompt, not busy.** A transaction that writes to the outbox in the leader's own process
///   hands the leader its events once it has committed, and the leader publishes them without
///   reading them back (unless it is still working through older rows: they go first). A write
///   in another process sends a `NOTIFY` that makes the leader look in the table. It also looks
///   at every poll, publishes in batches and waits once per batch for the confirms.
/// - **One bad row doesn't stall the rest.** A row the broker refuses (unroutable, nacked) is
///   retried later with growing delays while the rows behind it go out.
/// - **Bounded history.** Published rows are deleted after `retention`.
public final class OutboxRelay: Sendable {
    /// Tuning; the defaults suit a service on a small machine.
    public struct Configuration: Sendable {
        /// Rows published per round trip (one query, one confirm wait, one update).
        public var batchSize: Int
        /// How often the relay looks without being woken (and a standby tries to become leader).
        public var pollInterval: Duration
        /// How long published rows stay, for inspection and replay.
        public var retention: Duration
        /// How often rows past retention are deleted.
        public var cleanupInterval: Duration
        /// The longest a refused row waits before its next attempt.
        public var maximumRetryDelay: Duration
        /// How long events handed over by commits may stay unmarked after the broker confirmed
        /// them, so that one statement marks many (at most a batch). A crash in that time
        /// publishes them again: duplicates, which inboxes absorb. Rows found by looking in the
        /// table are marked at once.
        public var markDelay: Duration
        /// Crashes and duplicates on purpose, for the chaos suite; none by default.
        public var faults: FaultInjection

        public init(
            batchSize: Int = 200, pollInterval: Duration = .seconds(1), retention: Duration = .seconds(7 * 24 * 3600),
            cleanupInterval: Duration = .seconds(60), maximumRetryDelay: Duration = .seconds(300),
            markDelay: Duration = .milliseconds(50), faults: FaultInjection = .none
        ) {
            self.batchSize = batchSize
            self.pollInterval = pollInterval
            self.retention = retention
            self.cleanupInterval = cleanupInterval
            self.maximumRetryDelay = maximumRetryDelay
            self.markDelay = markDelay
            self.faults = faults
        }
    }

    private let service: ServiceName
    private let outbox: Outbox
    private let pool: PostgresPool
    private let publisher: AMQPConnection
    private let configuration: Configuration
    private let logger: Logger

    public init(
        service: ServiceName, outbox: Outbox, pool: PostgresPool, publisher: AMQPConnection,
        configuration: Configuration = Configuration(), logger: Logger
    ) {
        self.service = service
        self.outbox = outbox
        self.pool = pool
        self.publisher = publisher
        self.configuration = configuration
        var logger = logger
        logger[metadataKey: "component"] = "outbox-relay"
        self.logger = logger
    }

    /// Relays until the task is cancelled.
    public func run() async throws {
        while !Task.isCancelled {
            do {
                try await runWhileLeader()
            } catch is CancellationError {
                return
            } catch {
                logger.warning("relay interrupted, starting over: \(error)")
                try? await Task.sleep(for: configuration.pollInterval)
            }
        }
    }

    /// Waits to become leader, then relays until leadership (its database session) is lost.
    private func runWhileLeader() async throws {
        // The advisory lock lives as long as this session: a dedicated connection, not a pooled one.
        let database = await pool.configuration
        let leadership = try await PostgresConnection.connect(configuration: database, logger: logger)
        defer { Task { await leadership.close() } }
        // What this session writes — rows marked published, retry times, deletions — need not
        // wait for the disk: a mark lost in a crash means the row is published again, which the
        // consumers' inboxes absorb. It halves the flushes of a saga (every event's commit stays
        // durable; only the relay's bookkeeping doesn't).
        _ = try await leadership.execute("SET synchronous_commit = off")
        // Plan each statement for its own arguments. A prepared statement otherwise switches to a
        // generic plan after five runs, planned for the table as it was then: a service started on
        // an empty outbox kept marking rows (`position = ANY($1)`) with a sequential scan of the
        // whole table, growing with every event (auto_explain showed it; 0.5-0.75 ms a mark).
        _ = try await leadership.execute("SET plan_cache_mode = force_custom_plan")
        while !Task.isCancelled {
            let acquired = try await leadership.query(
                "SELECT pg_try_advisory_lock($1, hashtext($2))", AdvisoryLockClass.outboxRelay.rawValue, outbox.schema)
            if try acquired.first?.decode(Bool.self, at: 0) == true { break }
            try await Task.sleep(for: configuration.pollInterval)
        }
        try Task.checkCancellation()
        logger.info("leading the outbox relay of \(outbox.schema)")

        let wakeups = Wakeups(every: configuration.pollInterval, holding: configuration.batchSize * 8)
        defer { wakeups.stop() }
        // Notifications sent while the listener was reconnecting are lost: look again each time it listens.
        let listener = try PostgresListener(
            configuration: database, channels: [outbox.channel], logger: logger, onListening: { wakeups.wake() })
        defer { Task { await listener.stop() } }
        wakeups.follow(listener.notifications)
        // Commits in this process hand their events straight to this relay, without a NOTIFY (see
        // `Outbox.append`).
        let leading = LeadingRelays.lead(outbox.schema, handOver: { wakeups.handOver($0) })
        defer { LeadingRelays.resign(leading) }

        // Whether the last look found the table drained. Only then may events handed over go out
        // straight away: with a backlog, they would overtake older rows.
        var caughtUp = false
        // What looks in the table published: an event handed over just after a look began may
        // have gone out with it already.
        var publishedByLooks = RecentEventIDs(capacity: configuration.batchSize * 16)
        // Handed events confirmed but not yet marked: their marks go in one statement, at most
        // `markDelay` later (see `Configuration.markDelay`).
        var unmarked: [UUID] = []
        var oldestUnmarked = ContinuousClock.now
        var lastCleanup = ContinuousClock.now
        for await _ in wakeups.stream {
            if Task.isCancelled { break }
            // Reads and marks go through the session that holds the lock: if it was lost, so was
            // the lock (another instance may lead by now). A look then fails before publishing
            // anything; handed events fail at their mark, and the new leader publishes those not
            // marked yet again: duplicates, which inboxes absorb.
            let (look, handed) = wakeups.take()
            if look || !caughtUp {
                // A look must not find rows that are out already.
                try await markPublished(unmarked, on: leadership)
                unmarked = []
                // Every event handed over so far was committed before this look began: it finds them all.
                caughtUp = try await publishPending(on: leadership, recording: &publishedByLooks)
            } else {
                let fresh = handed.filter { !publishedByLooks.contains($0.eventId) }
                for batch in fresh.chunks(of: configuration.batchSize) {
                    let (confirmed, all) = try await publish(Array(batch), on: leadership)
                    if unmarked.isEmpty { oldestUnmarked = .now }
                    unmarked += confirmed
                    caughtUp = all
                    if !caughtUp { break }  // the rest wait in the table for the next look
                }
            }
            if !unmarked.isEmpty {
                if unmarked.count >= configuration.batchSize || ContinuousClock.now - oldestUnmarked >= configuration.markDelay {
                    try await markPublished(unmarked, on: leadership)
                    unmarked = []
                } else {
                    wakeups.wake(after: configuration.markDelay)  // to mark them if nothing else comes
                }
            }
            if ContinuousClock.now - lastCleanup >= configuration.cleanupInterval {
                try await deletePublished(on: leadership)
                lastCleanup = .now
            }
        }
        // The wake-ups end when the task is cancelled (the service shuts down) or the listener
        // stopped. Shutting down, publish what is committed before leaving: the calls below
        // don't stop on cancellation, and the service's shutdown deadline bounds them.
        if Task.isCancelled {
            try await markPublished(unmarked, on: leadership)
            _ = try await publishPending(on: leadership, recording: &publishedByLooks)
            throw CancellationError()
        }
    }

    /// Publishes every row of the table that is due, batch after batch, and returns whether it
    /// drained them (false when the broker refused or could not take some).
    private func publishPending(on database: PostgresConnection, recording published: inout RecentEventIDs) async throws -> Bool {
        while true {
            let rows = try await database.query(
                """
                SELECT event_id, event_type, event_version, exchange, routing_key, correlation_id,
                       causation_id, payload::text AS payload, headers::text AS headers, created_at, attempts
                FROM \(outbox.table)
                WHERE published_at IS NULL AND (retry_at IS NULL OR retry_at <= now())
                ORDER BY position
                LIMIT $1
                """, configuration.batchSize)
            let pending = try rows.map(PendingEvent.init)
            pending.forEach { published.insert($0.eventId) }
            if pending.isEmpty { return true }
            let (confirmed, all) = try await publish(pending, on: database)
            // Marked at once: the next look must not find them.
            try await markPublished(confirmed, on: database)
            guard all else { return false }
            if rows.count < configuration.batchSize { return true }
        }
    }

    /// Publishes one batch, waits once for the broker's confirms, and postpones what a working
    /// broker refused. Returns the ids of the events confirmed, and whether that is all of them:
    /// when it is not, the broker is struggling, and the relay goes back to the table at its next
    /// wake-up.
    private func publish(
        _ pending: [PendingEvent], on database: PostgresConnection
    ) async throws -> (confirmed: [UUID], all: Bool) {
        let faults = configuration.faults
        faults.maybeCrash(at: .relayBeforePublish)
        let messages = pending.map { $0.message(from: service, as: publisher.user) }
        // Injected duplicates go out after the batch, and only the batch's outcomes count.
        let duplicates = faults.duplicateShare > 0 ? messages.filter { _ in faults.shouldDuplicate() } : []
        let outcomes = await publisher.publish(
            batch: messages + duplicates, afterSending: { faults.maybeCrash(at: .relayBeforeConfirm) }
        ).prefix(messages.count)

        // Rows refused by a working broker wait with growing delays; when the connection itself
        // is down, nothing is held against the rows: they go out as soon as it is back.
        let brokerAway = publisher.status != .connected
        var published: [UUID] = []
        for (event, outcome) in zip(pending, outcomes) {
            if outcome == .confirmed {
                published.append(event.eventId)
                EventMetrics.published(event.type)
                logger.info(
                    "published",
                    metadata: [
                        "eventType": "\(event.type)", "eventId": "\(event.eventId.uuidString.lowercased())",
                        "orderId": "\(event.correlationId.uuidString.lowercased())",
                        "causationId": "\(event.causationId?.uuidString.lowercased() ?? "-")",
                        "routingKey": "\(event.routingKey)",
                    ])
            } else if !brokerAway {
                try await postpone(event, because: outcome.error?.description ?? "\(outcome)", on: database)
            }
        }
        logger.debug("published \(published.count) of \(pending.count) events in a batch")
        if brokerAway { logger.warning("broker unavailable; \(pending.count - published.count) events wait for it") }
        return (published, published.count == pending.count)
    }

    /// Marks rows published, once the broker confirmed them.
    private func markPublished(_ eventIds: [UUID], on database: PostgresConnection) async throws {
        guard !eventIds.isEmpty else { return }
        configuration.faults.maybeCrash(at: .relayBeforeMarkPublished)
        try await database.execute(
            "UPDATE \(outbox.table) SET published_at = now() WHERE event_id = ANY($1::uuid[])",
            "{" + eventIds.map(\.uuidString).joined(separator: ",") + "}")
    }

    private func postpone(_ event: PendingEvent, because reason: String, on database: PostgresConnection) async throws {
        logger.warning(
            "could not publish \(event.type) \(event.eventId) (attempt \(event.attempts + 1)): \(reason)",
            metadata: ["orderId": "\(event.correlationId)"])
        let delay = min(Duration.seconds(1 << min(event.attempts, 20)), configuration.maximumRetryDelay)
        try await database.execute(
            """
            UPDATE \(outbox.table)
            SET attempts = attempts + 1, last_error = $2, retry_at = now() + make_interval(secs => $3)
            WHERE event_id = $1
            """, event.eventId, reason, Int(delay.components.seconds))
    }

    /// Deletes published outbox rows, and inbox rows, older than the retention. An inbox row only
    /// matters while its message could still be redelivered, which is never days later; both
    /// tables otherwise grow without end. (The leader does it, so it runs once per schema.)
    private func deletePublished(on database: PostgresConnection) async throws {
        let retention = String(configuration.retention.seconds)
        let deleted = try await database.execute(
            "DELETE FROM \(outbox.table) WHERE published_at < now() - make_interval(secs => $1)", retention)
        let forgotten = try await database.execute(
            "DELETE FROM \(outbox.inboxTable) WHERE received_at < now() - make_interval(secs => $1)", retention)
        if deleted + forgotten > 0 {
            logger.info("deleted \(deleted) published outbox rows and \(forgotten) inbox rows past retention")
        }
    }
}

extension Duration {
    /// Fractional seconds, for SQL intervals.
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

/// An outbox row on its way to the broker: read from the table, or handed over by the
/// transaction that wrote it (`Outbox.append`).
struct PendingEvent: Sendable {
    var eventId: UUID
    var type: String
    var version: Int
    var exchange: String
    var routingKey: String
    var correlationId: UUID
    var causationId: UUID?
    var payload: String
    var headers: [String: String]
    var createdAt: Date
    var attempts: Int
}

extension PendingEvent {
    init(_ row: PostgresRow) throws {
        eventId = try row.decode(UUID.self, column: "event_id")
        type = try row.decode(String.self, column: "event_type")
        version = try row.decode(Int.self, column: "event_version")
        exchange = try row.decode(String.self, column: "exchange")
        routingKey = try row.decode(String.self, column: "routing_key")
        correlationId = try row.decode(UUID.self, column: "correlation_id")
        causationId = try row.decode(UUID?.self, column: "causation_id")
        payload = try row.decode(String.self, column: "payload")
        headers = try JSONDecoder().decode([String: String].self, from: Data(try row.decode(String.self, column: "headers").utf8))
        createdAt = try row.decode(Date.self, column: "created_at")
        attempts = try row.decode(Int.self, column: "attempts")
    }

    /// The AMQP message: the envelope as body, its identity in the properties so the broker's
    /// tools (and consumers that only look at properties) can see what it is. `user-id` is the
    /// broker user publishing it: the broker refuses a message whose `user-id` is not the
    /// connection's user, so consumers can trust it to say which service sent the event.
    ///
    /// `mandatory` is set for events that have consumers: if no queue is bound yet (a consumer
    /// not started yet), the broker returns the message and the relay retries it rather than lose
    /// it. Events nobody consumes (yet) are published without it: a consumer that binds later does
    /// not receive the ones published before, until `bazaar replay events` sends them to its queue.
    func message(from service: ServiceName, as user: String) -> OutgoingMessage {
        var headers = self.headers.mapValues(AMQPFieldValue.string)
        if let causationId { headers["x-causation-id"] = .string(causationId.uuidString.lowercased()) }
        let consumed = EventCatalogue.event(type: type, version: version).map { !EventCatalogue.consumers(of: $0).isEmpty }
        return OutgoingMessage(
            exchange: exchange, routingKey: routingKey, body: Array(payload.utf8),
            properties: AMQPProperties(
                contentType: "application/json", headers: headers, persistent: true,
                correlationId: correlationId.uuidString.lowercased(), messageId: eventId.uuidString.lowercased(),
                timestamp: createdAt, type: type, userId: user, appId: service.rawValue),
            mandatory: consumed ?? true)
    }
}

/// The relays that lead in this process, by schema, and how to hand each an event: a
/// transaction that writes to the outbox of one of them hands its events over after its commit,
/// and sends a NOTIFY only when the leader runs in another process. If leadership moves between
/// the write and the commit, the new leader still finds the row: it looks when it takes over, and
/// at every poll.
enum LeadingRelays {
    /// Identifies one relay's term as leader, so that a relay that lost its lead and resigns
    /// late never removes the entry of the one that took over.
    struct Term: Sendable {
        let schema: String
        let id: UInt64
    }

    private struct Leader {
        var term: UInt64
        var handOver: @Sendable (PendingEvent) -> Void
    }

    private static let state = Mutex<(next: UInt64, leaders: [String: Leader])>((0, [:]))

    static func lead(_ schema: String, handOver: @escaping @Sendable (PendingEvent) -> Void) -> Term {
        state.withLock { state in
            state.next += 1
            state.leaders[schema] = Leader(term: state.next, handOver: handOver)
            return Term(schema: schema, id: state.next)
        }
    }

    static func resign(_ term: Term) {
        state.withLock { state in
            if state.leaders[term.schema]?.term == term.id { state.leaders[term.schema] = nil }
        }
    }

    /// How to hand a committed event to the relay of `schema` leading in this process; nil if none does.
    static func handOver(to schema: String) -> (@Sendable (PendingEvent) -> Void)? {
        state.withLock { $0.leaders[schema]?.handOver }
    }
}

/// What wakes the relay, in one stream so that it has a single loop: requests to look in the
/// table (a ticker, database notifications, the listener reconnecting) and events handed over by
/// commits in this process. Buffers at most one wake-up: ten notifications while the relay is
/// busy mean one more pass. Holds at most `capacity` events handed over; beyond that it drops
/// them and asks for a look instead (the rows are in the table).
final class Wakeups: Sendable {
    let stream: AsyncStream<Void>
    private let continuation: AsyncStream<Void>.Continuation
    private let tasks = Mutex<[Task<Void, Never>]>([])
    private let capacity: Int
    // Look once right away: rows may be waiting from before the relay started.
    private let waiting = Mutex<(look: Bool, handed: [PendingEvent])>((true, []))
    private let timer = Mutex<Task<Void, Never>?>(nil)

    init(every interval: Duration, holding capacity: Int) {
        self.capacity = capacity
        (stream, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        continuation.yield()
        tasks.withLock {
            $0.append(Task { [weak self] in
                while !Task.isCancelled {
                    try? await Task.sleep(for: interval)
                    self?.wake()
                }
            })
        }
    }

    /// Asks the relay to look in the table.
    func wake() {
        waiting.withLock { $0.look = true }
        continuation.yield()
    }

    /// Wakes the relay `delay` from now, without asking it to look; one such wake-up waits at a time.
    func wake(after delay: Duration) {
        let continuation = continuation
        timer.withLock { timer in
            guard timer == nil else { return }
            timer = Task { [weak self] in
                try? await Task.sleep(for: delay)
                self?.timer.withLock { $0 = nil }
                continuation.yield()
            }
        }
    }

    func handOver(_ event: PendingEvent) {
        waiting.withLock { waiting in
            if waiting.handed.count < capacity { waiting.handed.append(event) } else { waiting.look = true }
        }
        continuation.yield()
    }

    /// What came since the last call: whether to look in the table, and the events handed over.
    func take() -> (look: Bool, handed: [PendingEvent]) {
        waiting.withLock { waiting in
            defer { waiting = (false, []) }
            return waiting
        }
    }

    /// Asks for a look on every notification; when the notifications end (the listener
    /// stopped), so do the wake-ups, and the relay starts over.
    func follow(_ notifications: AsyncStream<PostgresNotification>) {
        let continuation = continuation
        tasks.withLock {
            $0.append(Task { [weak self] in
                for await _ in notifications { self?.wake() }
                continuation.finish()
            })
        }
    }

    func stop() {
        tasks.withLock { $0.forEach { $0.cancel() } }
        timer.withLock { $0?.cancel() }
        continuation.finish()
    }
}

/// The last `capacity` event ids recorded, for "was this one published already?".
struct RecentEventIDs {
    let capacity: Int
    private var members: Set<UUID> = []
    private var order: [UUID] = []
    private var oldest = 0

    init(capacity: Int) { self.capacity = capacity }

    mutating func insert(_ id: UUID) {
        guard members.insert(id).inserted else { return }
        if order.count < capacity {
            order.append(id)
        } else {
            members.remove(order[oldest])
            order[oldest] = id
            oldest = (oldest + 1) % capacity
        }
    }

    func contains(_ id: UUID) -> Bool { members.contains(id) }
}

extension Array {
    /// Consecutive slices of at most `size` elements.
    func chunks(of size: Int) -> [ArraySlice<Element>] {
        stride(from: 0, to: count, by: size).map { self[$0..<Swift.min($0 + size, count)] }
    }
}
