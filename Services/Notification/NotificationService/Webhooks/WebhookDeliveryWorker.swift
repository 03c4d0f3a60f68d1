import AsyncHTTPClient
import Foundation
import Logging
import Postgres
import ServiceKit
import Synchronization

/// The circuit breakers of this instance, one per destination host.
///
/// They live in memory, per instance: simple, and free of database traffic on every attempt. The
/// cost is that each instance learns on its own that a host is down, so a dead host gets up to
/// `WEBHOOK_BREAKER_FAILURES` attempts and then one probe per open period from each instance —
/// still a trickle, which is the point. A restart forgets them (they close), which is harmless.
final class CircuitBreakers: Sendable {
    private let breakers = Mutex<[String: CircuitBreaker]>([:])
    let failureThreshold: Int
    let openDuration: Duration

    init(failureThreshold: Int, openDuration: Duration) {
        self.failureThreshold = failureThreshold
        self.openDuration = openDuration
    }

    func decide(host: String, at now: ContinuousClock.Instant) -> CircuitBreaker.Decision {
        update(host) { $0.decide(at: now) }
    }

    func recordSuccess(host: String) {
        update(host) { $0.recordSuccess() }
    }

    /// Returns true if this failure opened the breaker.
    @discardableResult
    func recordFailure(host: String, at now: ContinuousClock.Instant) -> Bool {
        update(host) { breaker in
            let wasOpen = breaker.isOpen
            breaker.recordFailure(at: now)
            return !wasOpen && breaker.isOpen
        }
    }

    private func update<Result>(_ host: String, _ body: (inout CircuitBreaker) -> Result) -> Result {
        breakers.withLock { breakers in
            var breaker = breakers[host] ?? CircuitBreaker(failureThreshold: failureThreshold, openDuration: openDuration)
            let result = body(&breaker)
            breakers[host] = breaker
            return result
        }
    }
}

/// Sends the delivery outbox's due rows, for the life of the process (a `ServiceDefinition` job).
///
/// Up to `WEBHOOK_CONCURRENCY` deliveries are in flight at once, at most
/// `WEBHOOK_HOST_CONCURRENCY` of them to one host (so one slow receiver can't hold up everyone
/// else's); as each ends, the worker claims more. Claiming is a short transaction (`FOR UPDATE SKIP LOCKED`, so several instances share
/// the work) that leases the rows by moving their due time past the request's timeout; the POST
/// happens outside any transaction, and a second short one records the outcome. An instance that
/// dies mid-request leaves its rows to come due again when the lease ends: delivery is at least
/// once, and `Bazaar-Delivery-Id` lets a receiver drop repeats.
///
/// It wakes on a short poll (`WEBHOOK_POLL_INTERVAL_MS`) rather than LISTEN/NOTIFY: a webhook
/// is not latency-critical the way the saga is, the poll is one indexed query on a partial index
/// of pending rows, and retries become due by the clock, which a notification would not announce
/// anyway.
struct WebhookDeliveryWorker: Sendable {
    let store: WebhookStore
    let settings: NotificationSettings
    let pool: PostgresPool
    let logger: Logger
    let breakers: CircuitBreakers

    init(store: WebhookStore, settings: NotificationSettings, pool: PostgresPool, logger: Logger) {
        self.store = store
        self.settings = settings
        self.pool = pool
        self.logger = logger
        breakers = CircuitBreakers(failureThreshold: settings.breakerFailures, openDuration: settings.breakerOpenDuration)
    }

    private enum Event: Sendable {
        case finished(host: String)
        case tick
    }

    func run() async throws {
        let client = WebhookSender.makeClient(settings)
        let sender = WebhookSender(client: client, settings: settings)
        await withTaskGroup(of: Event.self) { group in
            var inFlight = 0
            var busy: [String: Int] = [:]
            var ticking = false
            while !Task.isCancelled {
                let free = settings.concurrency - inFlight
                if free > 0 {
                    for delivery in await claim(limit: free, busy: busy) {
                        inFlight += 1
                        busy[delivery.host, default: 0] += 1
                        group.addTask {
                            await process(delivery, sender: sender)
                            return .finished(host: delivery.host)
                        }
                    }
                }
                if !ticking {
                    ticking = true
                    group.addTask {
                        try? await Task.sleep(for: settings.pollInterval)
                        return .tick
                    }
                }
                // Wakes when a slot frees up or the poll interval has passed, whichever is first.
                switch await group.next() {
                case .finished(let host):
                    inFlight -= 1
                    busy[host] = busy[host].map { $0 - 1 }.flatMap { $0 > 0 ? $0 : nil }
                case .tick: ticking = false
                case nil: break
                }
            }
            group.cancelAll()
        }
        try? await client.shutdown()
    }

    private func claim(limit: Int, busy: [String: Int]) async -> [ClaimedDelivery] {
        let (store, lease, perHost) = (store, settings.totalTimeout + settings.connectTimeout + .seconds(10), settings.hostConcurrency)
        do {
            return try await pool.transaction { tx in
                try store.claimDue(limit: limit, perHost: perHost, busy: busy, lease: lease, in: tx)
            }
        } catch {
            logger.warning("could not claim webhook deliveries, trying again: \(error)")
            return []
        }
    }

    private func process(_ delivery: ClaimedDelivery, sender: WebhookSender) async {
        let store = store
        let id = delivery.deliveryId
        let now = ContinuousClock.now
        if case .wait(let until) = breakers.decide(host: delivery.host, at: now) {
            // Not an attempt: the host had its share of failures; wait for the breaker, with a
            // little jitter so the waiting rows don't all come due in the same instant.
            let delay = (until - now) + .milliseconds(Int.random(in: 0...250))
            let reason = "postponed: the circuit breaker for \(delivery.host) is open"
            await record(id) { tx in store.postpone(id, by: delay, reason: reason, in: tx) }
            return
        }
        let outcome = await sender.send(delivery, logger: logger)
        // Shutting down mid-request (it was cancelled): the lease brings the row back, so only a
        // success is worth recording — it spares the receiver a repeat.
        if Task.isCancelled, outcome.status.map({ !(200..<300).contains($0) }) ?? true { return }
        let attempts = delivery.attempts + 1
        let retry = settings.backoff.delay(afterAttempts: attempts)
        switch outcome {
        case .delivered(let status):
            breakers.recordSuccess(host: delivery.host)
            await record(id) { tx in store.markDelivered(id, attempts: attempts, status: status, in: tx) }
        case .rejected(let status):
            breakers.recordSuccess(host: delivery.host)
            await record(id) { tx in
                store.markFailedAttempt(
                    id, attempts: attempts, status: status, error: "the receiver answered \(status)", retryAfter: retry, in: tx)
            }
        case .hostFailed(let status, let error):
            if breakers.recordFailure(host: delivery.host, at: ContinuousClock.now) {
                logger.warning(
                    "webhook host \(delivery.host) failing (\(error)): circuit breaker open for \(settings.breakerOpenDuration)")
            }
            await record(id) { tx in
                store.markFailedAttempt(id, attempts: attempts, status: status, error: error, retryAfter: retry, in: tx)
            }
        case .refused(let reason):
            // The host is unusable as it stands; the breaker must not stay half-open on it.
            breakers.recordFailure(host: delivery.host, at: ContinuousClock.now)
            logger.warning("webhook delivery \(id) refused: \(reason)")
            await record(id) { tx in
                store.markFailedAttempt(id, attempts: attempts, status: nil, error: reason, retryAfter: nil, in: tx)
            }
        }
        if case .delivered = outcome {} else if retry == nil {
            logger.warning("webhook delivery \(id) to \(delivery.host) failed after \(attempts) attempt(s)")
        }
    }

    /// Records an outcome; if that fails, the lease brings the row back for another try later.
    private func record(_ id: UUID, _ body: @escaping @Sendable (PostgresTransaction) throws -> Void) async {
        do {
            try await pool.transaction(body)
        } catch {
            logger.warning("could not record the outcome of webhook delivery \(id): \(error)")
        }
    }
}
