import AMQP
import Contracts
import Foundation
import Logging
import Postgres
import TestSupport
import Testing

@testable import EventRuntime

/// The outbox, relay and consumer against the real broker and database. Each test gets its own
/// schema; the suite gets its own virtual host, since the runtime publishes to the system's real
/// exchange names.
@Suite("Event runtime against RabbitMQ and Postgres", .serialized, .timeLimit(.minutes(2)))
final class RuntimeIntegrationTests {
    let vhost: TemporaryVirtualHost
    let logger = Logger(label: "runtime-tests")

    init() throws {
        vhost = try TemporaryVirtualHost.create(prefix: "runtime-tests")
    }

    deinit {
        vhost.delete()
    }

    // MARK: Outbox and relay

    @Test func theRelayPublishesWhatTheOutboxHoldsInOrderAndMarksItPublished() async throws {
        try await withEnvironment { env in
            let queue = try await env.bindQueue(to: OrderPlaced.self)
            let events = (0..<5).map { _ in Self.orderPlaced() }
            try await env.pool.transaction { tx in
                for event in events { try env.outbox.append(event, headers: ["traceparent": "00-abc-def-01"], in: tx) }
            }
            // A poll interval far longer than the test: only the NOTIFY of the commit can wake the relay.
            let relay = env.relay(pollInterval: .seconds(600))
            let running = Task { try await relay.run() }
            defer { running.cancel() }

            let deliveries = try await env.receive(events.count, from: queue)
            #expect(deliveries.map(\.properties.messageId) == events.map { $0.eventId.uuidString.lowercased() })
            let first = try #require(deliveries.first)
            #expect(first.properties.type == "OrderPlaced")
            #expect(first.properties.correlationId == events[0].correlationId.uuidString.lowercased())
            #expect(first.properties.appId == "order")
            #expect(first.properties.contentType == "application/json")
            #expect(first.headers["traceparent"] == "00-abc-def-01")
            #expect(first.routingKey == "order.placed.v1")
            let decoded = try EventJSON.decode(EventEnvelope<OrderPlaced>.self, from: Data(first.body))
            #expect(decoded.eventId == events[0].eventId && decoded.data == events[0].data)

            try await eventually {
                try await env.pool.query("SELECT count(*) FROM \(env.outbox.table) WHERE published_at IS NULL")
                    .first?.decode(Int.self, at: 0) == 0
            }
        }
    }

    /// Shutting down, the relay makes one last pass: a row committed without a wake-up (no
    /// NOTIFY, and a poll interval far beyond the test) goes out only because of it.
    @Test func aCancelledRelayPublishesWhatIsCommittedBeforeItStops() async throws {
        try await withEnvironment { env in
            let queue = try await env.bindQueue(to: OrderPlaced.self)
            let relay = env.relay(pollInterval: .seconds(600))
            let running = Task { try await relay.run() }
            // It leads once it published a first event (woken by that event's NOTIFY).
            try await env.pool.transaction { tx in try env.outbox.append(Self.orderPlaced(), in: tx) }
            _ = try await env.receive(1, from: queue)
            // Wake-ups already buffered (start, LISTEN established) are spent by now.
            try await Task.sleep(for: .seconds(1))

            let quiet = Self.orderPlaced()
            _ = try await env.pool.execute(
                """
                INSERT INTO \(env.outbox.table)
                    (event_id, event_type, event_version, exchange, routing_key, correlation_id, payload, headers)
                VALUES ($1, 'OrderPlaced', 1, 'orders', 'order.placed.v1', $2, $3::json, '{}'::jsonb)
                """, quiet.eventId, quiet.correlationId, String(decoding: try EventJSON.encode(quiet), as: UTF8.self))
            try await Task.sleep(for: .milliseconds(300))
            #expect(try await env.connection.queueStatus(queue).messages == 0, "published before the shutdown")

            running.cancel()
            _ = try? await running.value
            let last = try await env.receive(1, from: queue)
            #expect(last.first?.properties.messageId == quiet.eventId.uuidString.lowercased())
        }
    }

    @Test func aRowTheBrokerRefusesWaitsWhileTheRowsBehindItGoOut() async throws {
        try await withEnvironment { env in
            // PaymentCaptured has a consumer (order), so it is published as mandatory; with no queue
            // bound for it in this virtual host the broker returns it. OrderConfirmed behind it goes
            // to a bound queue.
            let queue = try await env.bindQueue(to: OrderConfirmed.self)
            let orderId = UUID()
            let stuck = EventEnvelope(
                correlationId: orderId, causationId: nil,
                data: PaymentCaptured(orderId: orderId, paymentId: UUID(), customerId: "c", amount: 1))
            let confirmed = EventEnvelope(
                correlationId: orderId, causationId: nil, data: OrderConfirmed(orderId: orderId, customerId: "c", total: 1))
            try await env.pool.transaction { tx in
                try env.outbox.append(stuck, in: tx)
                try env.outbox.append(confirmed, in: tx)
            }
            let relay = env.relay(pollInterval: .milliseconds(200))
            let running = Task { try await relay.run() }
            defer { running.cancel() }

            let delivered = try await env.receive(1, from: queue)
            #expect(delivered.first?.properties.messageId == confirmed.eventId.uuidString.lowercased())
            try await eventually {
                let row = try await env.pool.query(
                    "SELECT attempts, last_error, retry_at > now() AS waiting FROM \(env.outbox.table) WHERE event_id = $1",
                    stuck.eventId
                ).first
                return try row?.decode(Int.self, column: "attempts") ?? 0 >= 1
                    && row?.decode(String?.self, column: "last_error")?.contains("312") == true
                    && row?.decode(Bool.self, column: "waiting") == true
            }
        }
    }

    @Test func eventsWrittenWhileTheBrokerIsAwayGoOutWhenItIsBack() async throws {
        try await withEnvironment { env in
            let queue = try await env.bindQueue(to: OrderPlaced.self)
            let relay = env.relay(pollInterval: .milliseconds(200))
            let running = Task { try await relay.run() }
            defer { running.cancel() }
            let before = Self.orderPlaced()
            try await env.pool.transaction { tx in try env.outbox.append(before, in: tx) }
            _ = try await env.receive(1, from: queue)

            // The broker drops every connection of this virtual host, then events keep being written.
            try StackEnvironment.run(
                try StackEnvironment.rabbitmqctl, ["-q", "close_all_connections", "-p", vhost.name, "test: broker away"])
            let during = (0..<5).map { _ in Self.orderPlaced() }
            for event in during { try await env.pool.transaction { tx in try env.outbox.append(event, in: tx) } }

            try await eventually { env.connection.reconnectCount == 1 && env.connection.status == .connected }
            let delivered = try await env.receive(during.count, from: queue)
            #expect(delivered.map(\.properties.messageId) == during.map { $0.eventId.uuidString.lowercased() })
            try await eventually {
                try await env.pool.query("SELECT count(*) FROM \(env.outbox.table) WHERE published_at IS NULL")
                    .first?.decode(Int.self, at: 0) == 0
            }
        }
    }

    @Test func publishedRowsAndOldInboxRowsAreDeletedAfterTheRetention() async throws {
        try await withEnvironment { env in
            let queue = try await env.bindQueue(to: OrderPlaced.self)
            let event = Self.orderPlaced()
            try await env.pool.transaction { tx in try env.outbox.append(event, in: tx) }
            try await env.pool.execute(
                "INSERT INTO \(env.schemaName).inbox (event_id, event_type, event_version, source, correlation_id, occurred_at) VALUES ($1, 'OrderPlaced', 1, 'order', $1, now())",
                UUID())
            let relay = OutboxRelay(
                service: .order, outbox: env.outbox, pool: env.pool, publisher: env.connection,
                configuration: .init(pollInterval: .milliseconds(100), retention: .milliseconds(300), cleanupInterval: .zero),
                logger: env.logger)
            let running = Task { try await relay.run() }
            defer { running.cancel() }
            _ = try await env.receive(1, from: queue)
            try await eventually {
                let outbox = try await env.count("outbox"), inbox = try await env.count("inbox")
                return outbox == 0 && inbox == 0
            }
        }
    }

    @Test func whenTheLeadingRelayStopsAnotherTakesOver() async throws {
        try await withEnvironment { env in
            let queue = try await env.bindQueue(to: OrderPlaced.self)
            let first = env.relay(pollInterval: .milliseconds(100))
            let leading = Task { try await first.run() }
            let early = Self.orderPlaced()
            try await env.pool.transaction { tx in try env.outbox.append(early, in: tx) }
            _ = try await env.receive(1, from: queue)

            // A second relay waits as standby; the leader stops (its session ends, the lock goes).
            let second = env.relay(pollInterval: .milliseconds(100))
            let standby = Task { try await second.run() }
            defer { standby.cancel() }
            try await Task.sleep(for: .milliseconds(300))
            leading.cancel()
            _ = try? await leading.value

            let later = Self.orderPlaced()
            try await env.pool.transaction { tx in try env.outbox.append(later, in: tx) }
            let delivered = try await env.receive(1, from: queue)
            #expect(delivered.first?.properties.messageId == later.eventId.uuidString.lowercased())
        }
    }

    /// A write in the process whose relay leads hands its event to that relay itself, after the
    /// commit, and sends no NOTIFY; with no leader in the process, the write notifies a leader elsewhere.
    @Test func aCommitHandsItsEventsToItsProcesssLeadingRelayAndOtherwiseNotifies() async throws {
        try await withEnvironment { env in
            let queue = try await env.bindQueue(to: OrderPlaced.self)
            let listening = Mutex(false)
            let listener = try PostgresListener(
                configuration: await env.pool.configuration, channels: [env.outbox.channel], logger: env.logger,
                onListening: { listening.withLock { $0 = true } })
            defer { Task { await listener.stop() } }
            let notifications = Mutex(0)
            let counting = Task { for await _ in listener.notifications { notifications.withLock { $0 += 1 } } }
            defer { counting.cancel() }
            try await eventually { listening.withLock { $0 } }

            // No relay leads here: the commit notifies.
            let notified = Self.orderPlaced()
            try await env.pool.transaction { tx in try env.outbox.append(notified, in: tx) }
            try await eventually { notifications.withLock { $0 } == 1 }

            // This process's relay leads (it finds the first row when it takes over). Its poll
            // interval is far beyond the test: only the hand-over can bring it the second.
            let relay = env.relay(pollInterval: .seconds(600))
            let running = Task { try await relay.run() }
            defer { running.cancel() }
            _ = try await env.receive(1, from: queue)
            let woken = Self.orderPlaced()
            try await env.pool.transaction { tx in try env.outbox.append(woken, in: tx) }
            let delivered = try await env.receive(1, from: queue)
            #expect(delivered.first?.properties.messageId == woken.eventId.uuidString.lowercased())
            try await Task.sleep(for: .milliseconds(200))  // a NOTIFY, had one been sent, arrives by now
            #expect(notifications.withLock { $0 } == 1)
            // Its mark waits a little for company (`markDelay`), then comes by itself.
            try await eventually {
                try await env.pool.query("SELECT count(*) FROM \(env.outbox.table) WHERE published_at IS NULL")
                    .first?.decode(Int.self, at: 0) == 0
            }
        }
    }

    @Test func twoRelaysPublishEachEventOnce() async throws {
        try await withEnvironment { env in
            let queue = try await env.bindQueue(to: OrderPlaced.self)
            let relays = [env.relay(pollInterval: .milliseconds(100)), env.relay(pollInterval: .milliseconds(100))]
            let running = relays.map { relay in Task { try await relay.run() } }
            defer { running.forEach { $0.cancel() } }

            var events: [EventEnvelope<OrderPlaced>] = []
            for _ in 0..<10 {
                let batch = (0..<20).map { _ in Self.orderPlaced() }
                events += batch
                try await env.pool.transaction { tx in for event in batch { try env.outbox.append(event, in: tx) } }
            }
            let deliveries = try await env.receive(events.count, from: queue)
            #expect(deliveries.map(\.properties.messageId) == events.map { $0.eventId.uuidString.lowercased() })
            try await Task.sleep(for: .milliseconds(500))
            #expect(try await env.connection.queueStatus(queue).messages == 0, "an event was published twice")
        }
    }

    // MARK: Consumer and inbox

    @Test func aHandledEventIsAppliedOnceEvenWhenDeliveredTwice() async throws {
        try await withEnvironment { env in
            let consumer = try env.consumer { handlers in
                handlers.on(OrderPlaced.self) { envelope, context in
                    try context.transaction.execute(
                        "INSERT INTO \(env.schemaName).effects (order_id) VALUES ($1)", envelope.data.orderId)
                    try context.emit(StockRejected(orderId: envelope.data.orderId, reason: "out_of_stock", skus: ["X"]))
                }
            }
            let event = Self.orderPlaced()
            let first = await consumer.handle(try await env.deliver(event))
            #expect(first == .applied)
            #expect(await consumer.handle(try await env.deliver(event)) == .duplicate)

            #expect(try await env.count("effects") == 1)
            #expect(try await env.count("inbox") == 1)
            let emitted = try #require(
                try await env.pool.query("SELECT event_type, correlation_id, causation_id FROM \(env.outbox.table)").first)
            #expect(try emitted.decode(String.self, column: "event_type") == "StockRejected")
            #expect(try emitted.decode(UUID.self, column: "correlation_id") == event.correlationId)
            #expect(try emitted.decode(UUID.self, column: "causation_id") == event.eventId)
        }
    }

    @Test func deliveriesThatArriveTogetherShareOneTransactionAndAFailureFallsBackToEachAlone() async throws {
        try await withEnvironment { env in
            let failing = UUID()
            let consumer = try env.consumer { handlers in
                handlers.on(OrderPlaced.self) { envelope, context in
                    try context.transaction.execute(
                        "INSERT INTO \(env.schemaName).effects (order_id) VALUES ($1)", envelope.data.orderId)
                    if envelope.data.orderId == failing { throw TransientFault() }
                }
            }
            // Three events and a copy of the first: one transaction, the copy a duplicate.
            let events = (0..<3).map { _ in Self.orderPlaced() }
            var batch: [AMQPDelivery] = []
            for event in events + [events[0]] { batch.append(try await env.deliver(event)) }
            let outcomes = await consumer.handle(batch: batch)
            #expect(outcomes.filter { $0 == .applied }.count == 3)
            #expect(outcomes.filter { $0 == .duplicate }.count == 1)
            #expect(try await env.count("effects") == 3)
            let transactions = try await env.pool.query("SELECT count(DISTINCT xmin::text) FROM \(env.schemaName).inbox")
            #expect(try transactions.first!.decode(Int.self, at: 0) == 1)

            // One handler fails: nothing of the shared transaction stays; each is then handled
            // alone, the good one applied, the failing one sent to its retry queue.
            var bad = Self.orderPlaced()
            bad.data.orderId = failing
            let good = Self.orderPlaced()
            let second = await consumer.handle(batch: [try await env.deliver(good), try await env.deliver(bad)])
            #expect(second.contains(.applied))
            #expect(second.contains(.retryScheduled(attempt: 1, delay: .seconds(1))))
            #expect(try await env.count("effects") == 4)
            #expect(try await env.count("inbox") == 4)
            // Nothing is left unacked: the next delivery of the work queue is the retry, not a redelivery.
            let again = try await env.nextWork()
            #expect(again.headers["x-bazaar-attempts"]?.int == 1)
            try await again.ack()
        }
    }

    @Test func aFailingHandlerLeavesNoTraceAndTheEventComesBackFromTheRetryQueue() async throws {
        try await withEnvironment { env in
            let failures = Counter()
            let consumer = try env.consumer { handlers in
                handlers.on(OrderPlaced.self) { envelope, context in
                    try context.transaction.execute(
                        "INSERT INTO \(env.schemaName).effects (order_id) VALUES ($1)", envelope.data.orderId)
                    try context.emit(StockRejected(orderId: envelope.data.orderId, reason: "x", skus: []))
                    if failures.increment() == 1 { throw TransientFault() }
                }
            }
            let event = Self.orderPlaced()
            let first = await consumer.handle(try await env.deliver(event))
            #expect(first == .retryScheduled(attempt: 1, delay: .seconds(1)))
            #expect(try await env.count("effects") == 0)
            #expect(try await env.count("inbox") == 0)
            #expect(try await env.count("outbox") == 0)

            // The broker's retry queue holds it for its TTL, then dead-letters it back to the work
            // queue through the retry exchange; this time it applies.
            let again = try await env.nextWork()
            #expect(again.exchange == ServiceName.inventory.retryExchange)
            #expect(again.headers["x-bazaar-attempts"]?.int == 1)
            #expect(again.headers["x-bazaar-original-routing-key"]?.string == OrderPlaced.routingKey)
            #expect(await consumer.handle(again) == .applied)
            #expect(try await env.count("effects") == 1)
        }
    }

    @Test func aHandlerThatKeepsFailingIsParkedAfterItsLastAttemptWithItsHistory() async throws {
        try await withEnvironment { env in
            let consumer = try env.consumer(maximumAttempts: 3) { handlers in
                handlers.on(OrderPlaced.self) { _, _ in throw TransientFault() }
            }
            let event = Self.orderPlaced()
            #expect(await consumer.handle(try await env.deliver(event)) == .retryScheduled(attempt: 1, delay: .seconds(1)))
            #expect(await consumer.handle(try await env.nextWork()) == .retryScheduled(attempt: 2, delay: .seconds(5)))
            guard case .deadLettered(let reason) = await consumer.handle(try await env.nextWork()) else {
                Issue.record("the third failure was not parked")
                return
            }
            #expect(reason.hasPrefix("retries_exhausted"))

            let parked = try await env.receive(1, from: ServiceName.inventory.deadLetterQueue)[0]
            #expect(parked.body == Array(try EventJSON.encode(event)))
            #expect(parked.headers["x-bazaar-reason"]?.string == "retries_exhausted")
            #expect(parked.headers["x-bazaar-attempts"]?.int == 3)
            #expect(parked.headers["x-bazaar-error"]?.string?.contains("TransientFault") == true)
            #expect(parked.headers["x-bazaar-original-exchange"]?.string == "orders")
            #expect(parked.headers["x-bazaar-original-routing-key"]?.string == OrderPlaced.routingKey)
            guard case .timestamp(let first) = parked.headers["x-bazaar-first-failure-at"],
                case .timestamp(let last) = parked.headers["x-bazaar-last-failure-at"]
            else {
                Issue.record("failure times missing: \(parked.headers)")
                return
            }
            // Timestamps have whole seconds; the waits in between were 1 s and 5 s.
            #expect(last.timeIntervalSince(first) >= 5)
            #expect(try await env.connection.queueStatus(env.workQueue).messages == 0)
        }
    }

    @Test func aTerminatedDatabaseSessionIsRetriedInPlaceWithoutCountingAnAttempt() async throws {
        try await withEnvironment { env in
            let calls = Counter()
            let consumer = try env.consumer(maximumAttempts: 1) { handlers in
                handlers.on(OrderPlaced.self) { envelope, context in
                    // The first try kills its own session, as a database restart or an operator would.
                    if calls.increment() == 1 { try context.transaction.execute("SELECT pg_terminate_backend(pg_backend_pid())") }
                    try context.transaction.execute(
                        "INSERT INTO \(env.schemaName).effects (order_id) VALUES ($1)", envelope.data.orderId)
                }
            }
            // With one attempt allowed, a handler failure would park it: applying proves the lost
            // session was not counted as one.
            #expect(await consumer.handle(try await env.deliver(Self.orderPlaced())) == .applied)
            #expect(calls.increment() == 3)
            #expect(try await env.count("effects") == 1)
        }
    }

    @Test(arguments: [
        ("not json at all", "undecodable"),
        (#"{"eventId":"00000000-0000-4000-8000-000000000001","type":"Teleported","version":1,"occurredAt":"2026-11-23T20:36:01.123Z","correlationId":"00000000-0000-4000-8000-000000000002","source":"order","data":{}}"#, "unknown_event"),
        (#"{"eventId":"00000000-0000-4000-8000-000000000003","type":"OrderPlaced","version":1,"occurredAt":"2026-11-23T20:36:01.123Z","correlationId":"00000000-0000-4000-8000-000000000004","source":"order","data":{"orderId":"nope"}}"#, "invalid_data"),
        // A well-formed OrderPlaced that claims another producer than the exchange it came on.
        (#"{"eventId":"00000000-0000-4000-8000-000000000005","type":"OrderPlaced","version":1,"occurredAt":"2026-11-23T20:36:01.123Z","correlationId":"00000000-0000-4000-8000-000000000006","source":"payment","data":{"orderId":"00000000-0000-4000-8000-000000000006","customerId":"mallory","items":[{"sku":"A","quantity":1,"unitPrice":1}],"total":1}}"#, "untrusted_source"),
    ])
    func aPoisonMessageIsDeadLetteredWithItsReasonAndChangesNothing(body: String, reason: String) async throws {
        try await withEnvironment { env in
            let consumer = try env.consumer { handlers in
                handlers.on(OrderPlaced.self) { _, context in
                    try context.transaction.execute("INSERT INTO \(env.schemaName).effects (order_id) VALUES (gen_random_uuid())")
                }
            }
            let outcome = await consumer.handle(try await env.deliver(raw: Array(body.utf8)))
            guard case .deadLettered = outcome else {
                Issue.record("\(outcome)")
                return
            }
            let parked = try await env.receive(1, from: ServiceName.inventory.deadLetterQueue)[0]
            #expect(parked.body == Array(body.utf8))
            #expect(parked.headers["x-bazaar-reason"]?.string == reason)
            #expect(parked.headers["x-bazaar-error"]?.string?.isEmpty == false)
            #expect(parked.headers["x-bazaar-original-exchange"]?.string == "orders")
            #expect(try await env.count("effects") == 0)
            #expect(try await env.count("inbox") == 0)
            try await Task.sleep(for: .milliseconds(100))
            #expect(try await env.connection.queueStatus(env.workQueue).messages == 0, "the poison message is still queued")
        }
    }

    /// The broker checks `user-id` against the publishing connection's user; the consumer checks
    /// it against the event's producer. An event published by anyone else changes nothing.
    @Test func anEventNotPublishedByItsProducersBrokerUserIsParkedAsUntrusted() async throws {
        try await withEnvironment { env in
            let consumer = try env.consumer(publisherUsers: try PublisherUsers(parsing: "order=order")) { handlers in
                handlers.on(OrderPlaced.self) { envelope, context in
                    try context.transaction.execute(
                        "INSERT INTO \(env.schemaName).effects (order_id) VALUES ($1)", envelope.data.orderId)
                }
            }
            let body = Array(try EventJSON.encode(Self.orderPlaced()))
            for delivery in [try await env.deliver(raw: body), try await env.deliver(raw: body, stampUser: false)] {
                guard case .deadLettered(let reason) = await consumer.handle(delivery) else {
                    Issue.record("an event from user \(delivery.properties.userId ?? "none") was not parked")
                    continue
                }
                #expect(reason.hasPrefix("untrusted_source"))
            }
            let parked = try await env.receive(2, from: ServiceName.inventory.deadLetterQueue)
            #expect(parked.map { $0.headers["x-bazaar-reason"]?.string } == ["untrusted_source", "untrusted_source"])
            #expect(try await env.count("effects") == 0)
        }
    }

    /// A replay (`OutboxReplay`) reaches the queue through the default exchange; it is judged by
    /// the exchange it names, so it applies when that is its producer's, and is parked otherwise.
    @Test func aReplayThroughTheDefaultExchangeIsCheckedAgainstTheExchangeItNames() async throws {
        try await withEnvironment { env in
            let consumer = try env.consumer { handlers in
                handlers.on(OrderPlaced.self) { envelope, context in
                    try context.transaction.execute(
                        "INSERT INTO \(env.schemaName).effects (order_id) VALUES ($1)", envelope.data.orderId)
                }
            }
            func replay(naming exchange: String?) async throws -> EventConsumer.Outcome {
                var headers: AMQPTable = [OutboxReplay.replayedHeader: .bool(true)]
                if let exchange {
                    headers[OutboxReplay.exchangeHeader] = .string(exchange)
                    headers[OutboxReplay.routingKeyHeader] = .string(OrderPlaced.routingKey)
                }
                try await env.connection.publish(
                    OutgoingMessage(
                        exchange: "", routingKey: env.workQueue, body: Array(try EventJSON.encode(Self.orderPlaced())),
                        properties: AMQPProperties(headers: headers, userId: env.connection.user)))
                return await consumer.handle(try await env.nextWork())
            }
            #expect(try await replay(naming: "orders") == .applied)
            for exchange in ["payments", nil] {
                guard case .deadLettered(let reason) = try await replay(naming: exchange) else {
                    Issue.record("a replay naming \(exchange ?? "no exchange") was not parked")
                    continue
                }
                #expect(reason.hasPrefix("untrusted_source"))
            }
            #expect(try await env.count("effects") == 1)
        }
    }

    @Test func anOversizedMessageIsParkedUnread() async throws {
        try await withEnvironment { env in
            let consumer = try env.consumer { handlers in handlers.on(OrderPlaced.self) { _, _ in } }
            let body = Array(try EventJSON.encode(Self.orderPlaced())) + Array(repeating: UInt8(ascii: " "), count: 300_000)
            guard case .deadLettered = await consumer.handle(try await env.deliver(raw: body)) else {
                Issue.record("an oversized message was not parked")
                return
            }
            let parked = try await env.receive(1, from: ServiceName.inventory.deadLetterQueue)[0]
            #expect(parked.headers["x-bazaar-reason"]?.string == "oversized")
            #expect(try await env.count("inbox") == 0)
        }
    }

    // MARK: Helpers

    static func orderPlaced() -> EventEnvelope<OrderPlaced> {
        let orderId = UUID()
        return EventEnvelope(
            correlationId: orderId, causationId: nil,
            data: OrderPlaced(
                orderId: orderId, customerId: "alice", items: [OrderLine(sku: "MUG-01", quantity: 2, unitPrice: 1250)],
                total: 2500))
    }

    private func withEnvironment(_ body: (TestEnvironment) async throws -> Void) async throws {
        let env = try await TestEnvironment(vhost: vhost, logger: logger)
        do {
            try await body(env)
        } catch {
            await env.tearDown()
            throw error
        }
        await env.tearDown()
    }
}

struct TransientFault: Error {}

/// A thread-safe counter for handlers, which run on the database's threads.
final class Counter: Sendable {
    private let value = Mutex(0)
    func increment() -> Int { value.withLock { $0 += 1; return $0 } }
}

import Synchronization

/// A schema with the runtime's tables (plus `effects`, for handlers to write to), a pool, and a
/// broker connection in the suite's virtual host, with inventory's queue declared as a consumer
/// would (its topology from the catalogue).
struct TestEnvironment: Sendable {
    let schemaName: String
    let outbox: Outbox
    let pool: PostgresPool
    let connection: AMQPConnection
    let logger: Logger
    let workQueue = ServiceName.inventory.queue
    /// Deliveries of the work queue, which the tests hand to the consumer under test. It stays
    /// open for the whole test: a delivery can only be acked on the channel it came on.
    let work: AMQPConsumer

    init(vhost: TemporaryVirtualHost, logger: Logger) async throws {
        schemaName = "runtime_test_\(UUID().uuidString.prefix(8).lowercased())"
        pool = PostgresPool(configuration: try PostgresConfiguration(url: try StackEnvironment.databaseURL), logger: logger)
        try await MigrationRunner(schema: schemaName, logger: logger).run(
            RuntimeTables.migrations + [
                Migration(version: 100, name: "effects", sql: "CREATE TABLE effects (order_id uuid NOT NULL)")
            ], on: pool)
        outbox = try Outbox(schema: schemaName)
        connection = try await AMQPConnection.connect(
            try AMQPConfiguration(url: vhost.amqpURL, connectionName: "runtime-tests"), logger: logger)
        try await connection.declare(
            ServiceTopology.topology(for: .inventory, handling: [EventKey(OrderPlaced.self)]))
        try await connection.purgeQueue(workQueue)
        try await connection.purgeQueue(ServiceName.inventory.deadLetterQueue)
        for delay in ServiceTopology.retryDelays {
            try await connection.purgeQueue(ServiceTopology.retryQueue(of: .inventory, delay: delay))
        }
        work = try await connection.consume(queue: workQueue)
        self.logger = logger
    }

    func tearDown() async {
        _ = try? await pool.execute("DROP SCHEMA \(schemaName) CASCADE")
        await pool.shutdown()
        await connection.close()
    }

    func relay(pollInterval: Duration) -> OutboxRelay {
        OutboxRelay(
            service: .order, outbox: outbox, pool: pool, publisher: connection,
            configuration: .init(pollInterval: pollInterval), logger: logger)
    }

    func consumer(
        maximumAttempts: Int = 5, publisherUsers: PublisherUsers? = nil, _ register: (inout EventHandlers) -> Void
    ) throws -> EventConsumer {
        var handlers = EventHandlers()
        register(&handlers)
        return try EventConsumer(
            service: .inventory, schema: schemaName, handlers: handlers, pool: pool, publisher: connection,
            policy: RetryPolicy(maximumAttempts: maximumAttempts, databasePauseInitial: .milliseconds(10)),
            publisherUsers: publisherUsers ?? .everyone(connection.user), logger: logger)
    }

    /// A queue of the test's own bound to `event`'s routing key.
    func bindQueue(to event: any DomainEvent.Type) async throws -> String {
        let queue = "test.\(event.type).\(UUID().uuidString.prefix(8))"
        try await connection.declare(
            Topology(
                queues: [QueueSpec(name: queue, kind: .classic)],
                bindings: [BindingSpec(queue: queue, exchange: event.producer.exchange, routingKey: event.routingKey)]))
        return queue
    }

    /// Publishes `envelope` as the producer's relay would, and returns it as the consumer gets it.
    func deliver<Event: DomainEvent>(_ envelope: EventEnvelope<Event>) async throws -> AMQPDelivery {
        try await deliver(raw: Array(try EventJSON.encode(envelope)), routingKey: Event.routingKey)
    }

    /// Publishes `body` to the orders exchange as the test's broker user (the `user-id` the
    /// consumer expects), and returns it as the consumer gets it.
    /// (`stampUser: false` publishes without a `user-id`.)
    func deliver(raw body: [UInt8], routingKey: String = OrderPlaced.routingKey, userId: String? = nil, stampUser: Bool = true)
        async throws -> AMQPDelivery
    {
        try await connection.publish(
            OutgoingMessage(
                exchange: "orders", routingKey: routingKey, body: body,
                properties: AMQPProperties(userId: stampUser ? userId ?? connection.user : nil)))
        return try await nextWork()
    }

    /// The next delivery of the work queue, not yet settled.
    func nextWork() async throws -> AMQPDelivery {
        try await within(.seconds(10)) { [work] in
            var iterator = work.makeAsyncIterator()
            guard let delivery = try await iterator.next() else { throw CancellationError() }
            return delivery
        }
    }

    /// The next `count` deliveries of `queue`, acked.
    func receive(_ count: Int, from queue: String) async throws -> [AMQPDelivery] {
        let consumer = try await connection.consume(queue: queue, prefetch: UInt16(min(count, 500)))
        let deliveries = try await within(.seconds(20)) {
            var deliveries: [AMQPDelivery] = []
            for try await delivery in consumer {
                deliveries.append(delivery)
                if deliveries.count == count { break }
            }
            return deliveries
        }
        for delivery in deliveries { try await delivery.ack() }
        try await consumer.cancel()
        return deliveries
    }

    func count(_ table: String) async throws -> Int {
        try await pool.query("SELECT count(*) FROM \(schemaName).\(table)").first!.decode(Int.self, at: 0)
    }
}

/// Polls `condition` until it holds, for up to 10 s.
func eventually(_ condition: @escaping @Sendable () async throws -> Bool) async throws {
    try await within(.seconds(10)) {
        while try await !condition() { try await Task.sleep(for: .milliseconds(50)) }
    }
}
