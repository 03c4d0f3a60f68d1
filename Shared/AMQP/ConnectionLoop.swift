import Foundation
import Logging
import Synchronization

// The concurrency design of the module, in one place.
//
// librabbitmq's connection state may be used by one thread at a time and its calls block. So
// every connection gets one dedicated thread — its loop — that alone touches the C state. The
// loop does three things, in turn, forever:
//   1. runs the commands other threads queued in its mailbox (publish, ack, declare…);
//   2. reads whatever the broker sent (deliveries, publisher confirms, returns, closes) and hands
//      it on: deliveries to consumers' streams, confirms to waiting publishers;
//   3. waits with poll() on two file descriptors: the socket, and a pipe that the mailbox writes
//      to when a command arrives. The wait is bounded so heartbeats go out on time.
// The async API (AMQPConnection) only puts closures in the mailbox and awaits continuations the
// loop resumes, so no Swift task ever blocks on the network and no two threads share C state.
//
// When the connection is lost the loop fails what waited on it (a publish whose confirm can no
// longer come), reconnects with capped exponential back-off, declares the recorded topology
// again and restarts every consumer on a fresh channel. Consumers' streams stay open across
// reconnects; acks for deliveries of the old channel are refused (the broker redelivers them).

/// A unit of work for the loop's thread.
typealias LoopCommand = @Sendable (ConnectionLoop) -> Void

/// The thread that owns one librabbitmq connection (see the design note above).
///
/// `@unchecked Sendable`: the type crosses threads (commands capture it), but all its stored
/// state except `mailbox`, `status` and `reconnects` is only read and written on its own thread,
/// inside `run()` and the commands it executes. Those three are Mutex-protected or atomic;
/// `wakeup` is a pipe, safe to write from any thread. Once the loop has shut down (the mailbox is
/// `nil`), late commands run on their caller's thread: the loop thread no longer touches the
/// state by then, and the mailbox's lock orders its last writes before their reads.
final class ConnectionLoop: @unchecked Sendable {
    let configuration: AMQPConfiguration
    let logger: Logger

    /// Commands waiting for the thread; `nil` once the loop has shut down for good.
    private let mailbox = Mutex<[LoopCommand]?>([])
    let status = Mutex(ConnectionStatus.connecting)
    /// How many times a lost connection was replaced.
    let reconnects = Atomic<Int>(0)
    private let wakeup: (read: Int32, write: Int32)

    // Loop-thread state.
    private(set) var session: RabbitMQSession?
    private var topology = Topology()
    private var stopping = false
    private var reconnectAttempt = 0
    private var lastInbound = ContinuousClock.now
    private var publishes = PendingPublishes()
    private var consumers: [String: ConsumerRecord] = [:]
    private var nextConsumerChannel = RabbitMQSession.firstConsumerChannel
    /// Increases whenever any channel opens; a delivery is acked only on the channel incarnation
    /// it arrived on.
    private var channelIncarnation: UInt64 = 0
    private var firstConnect: CheckedContinuation<Void, any Error>?

    init(configuration: AMQPConfiguration, logger: Logger) {
        self.configuration = configuration
        var logger = logger
        logger[metadataKey: "amqp.connection"] = .string(configuration.connectionName)
        self.logger = logger
        var fds: [Int32] = [0, 0]
        precondition(pipe(&fds) == 0, "pipe() failed: \(errno)")
        for fd in fds { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }
        wakeup = (fds[0], fds[1])
    }

    deinit {
        close(wakeup.read)
        close(wakeup.write)
    }

    /// Starts the thread; returns once the first connection is open, or throws why it could not.
    func start() async throws {
        try await withCheckedThrowingContinuation { continuation in
            self.firstConnect = continuation
            let thread = Thread { self.run() }
            thread.name = "amqp:\(configuration.connectionName)"
            thread.start()
        }
    }

    /// Queues work for the loop's thread and wakes it. After shut-down the command runs at once,
    /// on the caller's thread, where it finds no session and fails with `.closed`.
    func submit(_ command: @escaping LoopCommand) {
        let queued = mailbox.withLock { commands -> Bool in
            guard commands != nil else { return false }
            commands!.append(command)
            return true
        }
        guard queued else {
            command(self)
            return
        }
        var byte: UInt8 = 1
        _ = write(wakeup.write, &byte, 1)
    }

    // MARK: The loop

    private func run() {
        guard connectFirstTime() else { return }
        while !stopping {
            if session == nil {
                waitThenReconnect()
                continue
            }
            runCommands()
            readEvents()
            if session != nil, !stopping, !hasQueuedCommands, !(session?.hasBufferedInput ?? false) {
                waitForInput(timeout: pollInterval)
            }
            checkHeartbeat()
        }
        shutDown()
    }

    /// Opens the first connection and reports the outcome to `start()`; a failure ends the loop.
    private func connectFirstTime() -> Bool {
        let continuation = firstConnect
        firstConnect = nil
        do {
            try openSession()
            continuation?.resume()
            return true
        } catch {
            status.withLock { $0 = .closed }
            continuation?.resume(throwing: error)
            return false
        }
    }

    private func openSession() throws {
        let session = try RabbitMQSession.open(configuration)
        self.session = session
        lastInbound = .now
        channelIncarnation += 1
        publishes.reset()
        nextConsumerChannel = RabbitMQSession.firstConsumerChannel
        for tag in consumers.keys { consumers[tag]?.channel = 0 }  // channels of the old connection
        do {
            try declare(topology, on: session)
            for tag in consumers.keys.sorted() { try restartConsumer(tag) }
        } catch {
            self.session = nil
            throw error
        }
        status.withLock { $0 = .connected }
        logger.info("connected to \(configuration.redactedURL)")
    }

    private func waitThenReconnect() {
        let delay = configuration.reconnectBackoff.delay(forAttempt: reconnectAttempt)
        let deadline = ContinuousClock.now + delay
        while !stopping, ContinuousClock.now < deadline {
            runCommands()  // they fail fast with .notConnected while we are away
            waitForInput(timeout: min(deadline - .now, .milliseconds(250)))
        }
        guard !stopping else { return }
        do {
            try openSession()
            logger.notice("reconnected after \(reconnectAttempt + 1) attempt(s)")
            reconnects.add(1, ordering: .relaxed)
            reconnectAttempt = 0
        } catch {
            reconnectAttempt += 1
            logger.warning("reconnect attempt \(reconnectAttempt) failed: \(error)")
        }
    }

    private var hasQueuedCommands: Bool { mailbox.withLock { !($0?.isEmpty ?? true) } }

    private func runCommands() {
        let commands = mailbox.withLock { commands in
            defer { commands?.removeAll(keepingCapacity: true) }
            return commands ?? []
        }
        for command in commands { command(self) }
        session?.releaseBuffers()
    }

    private var pollInterval: Duration {
        guard configuration.heartbeat > 0 else { return .seconds(1) }
        return min(.seconds(1), .seconds(configuration.heartbeat) / 4)
    }

    /// Sleeps until the socket is readable, a command arrives, or `timeout` passes.
    private func waitForInput(timeout: Duration) {
        var fds = [pollfd(fd: wakeup.read, events: Int16(POLLIN), revents: 0)]
        if let session { fds.append(pollfd(fd: session.socketDescriptor, events: Int16(POLLIN), revents: 0)) }
        let milliseconds = Int32(max(0, timeout.seconds * 1000).rounded(.up))
        guard poll(&fds, nfds_t(fds.count), milliseconds) > 0 else { return }
        if fds[0].revents != 0 {
            var drain = [UInt8](repeating: 0, count: 64)
            while read(wakeup.read, &drain, drain.count) > 0 {}
        }
        if fds.count > 1, fds[1].revents != 0 { lastInbound = .now }
    }

    /// librabbitmq notices a missing heartbeat only while it waits inside its own calls, and ours
    /// never wait. So the loop keeps the time of the last inbound data and gives up on a
    /// connection silent for two heartbeat intervals (the broker sends one every interval / 2).
    private func checkHeartbeat() {
        guard session != nil, configuration.heartbeat > 0 else { return }
        if ContinuousClock.now - lastInbound > .seconds(configuration.heartbeat * 2) {
            connectionLost(
                AMQPError.library(status: -1, message: "no heartbeat from the broker", during: "waiting for data"))
        }
    }

    /// Reads every frame that is ready, without blocking.
    private func readEvents() {
        while let session {
            do {
                guard let event = try session.nextEvent() else { break }
                lastInbound = .now
                handle(event)
            } catch let error as AMQPError {
                connectionLost(error)
            } catch {
                connectionLost(.library(status: -1, message: "\(error)", during: "reading"))
            }
        }
        session?.releaseBuffers()
    }

    private func handle(_ event: InboundEvent) {
        switch event {
        case .delivery(let channel, let delivery):
            deliver(delivery, channel: channel)
        case .publishAck(let tag, let multiple):
            publishes.settle(upTo: tag, multiple: multiple, acked: true)
        case .publishNack(let tag, let multiple):
            publishes.settle(upTo: tag, multiple: multiple, acked: false)
        case .returned(let code, let text, let messageId):
            publishes.markReturned(messageId: messageId, replyCode: code, replyText: text)
        case .channelClosed(let channel, let error):
            channelClosed(channel, error)
        case .consumerCancelled(let tag):
            if let record = consumers.removeValue(forKey: tag) {
                logger.warning("broker cancelled consumer \(tag) of \(record.queue) (queue deleted?)")
                record.stream.finish(throwing: AMQPError.channelClosed(replyCode: 0, replyText: "consumer cancelled by the broker"))
            }
        case .blocked(let reason):
            logger.warning("broker blocked publishing on this connection: \(reason)")
        case .unblocked:
            logger.notice("broker unblocked publishing on this connection")
        case .ignored:
            break
        }
    }

    private func channelClosed(_ channel: UInt16, _ error: AMQPError) {
        logger.warning("broker closed channel \(channel): \(error)")
        if channel == RabbitMQSession.publishChannel {
            publishes.failAll(.confirmLost(reason: error.description))
            do {
                try session?.openChannel(channel)
                channelIncarnation += 1
                try session?.enableConfirms()
                publishes.reset()
            } catch {
                connectionLost(error as? AMQPError ?? .notConnected)
            }
        } else if channel == RabbitMQSession.controlChannel {
            do { try session?.openChannel(channel) } catch { connectionLost(error as? AMQPError ?? .notConnected) }
        } else if let tag = consumers.first(where: { $0.value.channel == channel })?.key {
            do {
                try restartConsumer(tag)
            } catch {
                if let record = consumers.removeValue(forKey: tag) { record.stream.finish(throwing: error) }
            }
        }
    }

    /// Drops the session, fails what waited on it, and lets the loop reconnect.
    func connectionLost(_ error: AMQPError) {
        guard session != nil else { return }
        logger.warning("connection lost: \(error)")
        session = nil
        // Status first: a publisher woken by the failures below must already see the broker away.
        status.withLock { $0 = .reconnecting(lastError: error.description) }
        publishes.failAll(.confirmLost(reason: error.description))
    }

    private func shutDown() {
        if let session {
            session.close()
            self.session = nil
        }
        publishes.failAll(.closed)
        for record in consumers.values { record.stream.finish() }
        consumers.removeAll()
        status.withLock { $0 = .closed }
        // Close the mailbox; what was still in it sees no session and fails with .closed.
        for command in mailbox.withLock({ commands in defer { commands = nil }; return commands ?? [] }) {
            command(self)
        }
        logger.info("connection closed")
    }

    // MARK: Operations (called by commands, on the loop's thread)

    /// The error a command should fail with when there is no session.
    var unavailable: AMQPError { stopping ? .closed : .notConnected }

    func requestStop() { stopping = true }

    /// Runs `body` against the session; an error that ends the connection also starts reconnecting.
    func withSession<T>(_ body: (RabbitMQSession) throws -> T) throws -> T {
        guard let session else { throw unavailable }
        do {
            return try body(session)
        } catch let error as AMQPError {
            if error.endsConnection { connectionLost(error) }
            throw error
        }
    }

    func declare(_ topology: Topology) throws {
        try withSession { session in try declare(topology, on: session) }
        self.topology = self.topology.merging(topology)
    }

    private func declare(_ topology: Topology, on session: RabbitMQSession) throws {
        for exchange in topology.exchanges { try session.declare(exchange) }
        for queue in topology.queues { try session.declare(queue) }
        for binding in topology.bindings { try session.declare(binding) }
    }

    func publish(_ messages: [OutgoingMessage], batch: PublishBatch) {
        for (index, message) in messages.enumerated() {
            guard let session else {
                batch.settle(index, .failed(unavailable))
                continue
            }
            do {
                try session.publish(message)
                publishes.add(batch: batch, index: index, messageId: message.properties.messageId)
            } catch let error as AMQPError {
                batch.settle(index, .failed(error))
                if error.endsConnection { connectionLost(error) }
            } catch {
                batch.settle(index, .failed(.library(status: -1, message: "\(error)", during: "publishing")))
            }
        }
    }

    func addConsumer(
        queue: String, prefetch: UInt16, consumerTag: String,
        stream: AsyncThrowingStream<AMQPDelivery, any Error>.Continuation, connection: AMQPConnection
    ) throws {
        guard session != nil else { throw unavailable }
        consumers[consumerTag] = ConsumerRecord(
            queue: queue, prefetch: prefetch, channel: 0, incarnation: 0, stream: stream, connection: connection)
        do {
            try restartConsumer(consumerTag)
        } catch {
            consumers[consumerTag] = nil
            throw error
        }
    }

    /// (Re)starts a consumer: on a new channel after a reconnect, or on its own channel again after
    /// the broker closed it (a closed channel's number may be reused once close-ok is sent).
    private func restartConsumer(_ tag: String) throws {
        guard var record = consumers[tag] else { return }
        let channel = record.channel != 0 ? record.channel : nextConsumerChannel
        if record.channel == 0 { nextConsumerChannel += 1 }
        channelIncarnation += 1
        try withSession { session in
            try session.startConsumer(channel: channel, queue: record.queue, consumerTag: tag, prefetch: record.prefetch)
        }
        record.channel = channel
        record.incarnation = channelIncarnation
        consumers[tag] = record
    }

    func cancelConsumer(_ tag: String) throws {
        guard let record = consumers.removeValue(forKey: tag) else { return }
        defer { record.stream.finish() }
        try withSession { session in try session.cancelConsumer(channel: record.channel, consumerTag: tag) }
    }

    private func deliver(_ inbound: InboundDelivery, channel: UInt16) {
        guard let record = consumers[inbound.consumerTag], record.channel == channel else {
            // A delivery for a consumer we just cancelled: the broker requeues it when the channel closes.
            return
        }
        let delivery = AMQPDelivery(
            inbound, receipt: DeliveryReceipt(
                connection: record.connection, channel: channel, incarnation: record.incarnation,
                deliveryTag: inbound.deliveryTag))
        record.stream.yield(delivery)
    }

    /// Acks, nacks or rejects on the loop's thread, refusing receipts of a channel that has closed.
    func settle(_ receipt: DeliveryReceipt, _ action: DeliverySettlement) throws {
        guard consumers.values.contains(where: { $0.channel == receipt.channel && $0.incarnation == receipt.incarnation })
        else { throw session == nil ? unavailable : AMQPError.staleDelivery }
        try withSession { session in
            switch action {
            case .ack: try session.ack(channel: receipt.channel, deliveryTag: receipt.deliveryTag, multiple: false)
            case .nack(let requeue):
                try session.nack(channel: receipt.channel, deliveryTag: receipt.deliveryTag, multiple: false, requeue: requeue)
            case .reject(let requeue):
                try session.reject(channel: receipt.channel, deliveryTag: receipt.deliveryTag, requeue: requeue)
            }
        }
    }
}

/// Where the connection stands, for health checks.
public enum ConnectionStatus: Sendable, Equatable {
    case connecting
    case connected
    /// Lost, and trying again; the error that ended the last connection.
    case reconnecting(lastError: String)
    case closed
}

enum DeliverySettlement {
    case ack
    case nack(requeue: Bool)
    case reject(requeue: Bool)
}

struct ConsumerRecord {
    var queue: String
    var prefetch: UInt16
    var channel: UInt16
    var incarnation: UInt64
    var stream: AsyncThrowingStream<AMQPDelivery, any Error>.Continuation
    var connection: AMQPConnection
}

/// Publishes sent on the current publishing channel and waiting for their confirms.
///
/// The broker confirms by delivery tag: 1, 2, 3… in publish order on the channel, and
/// `multiple` settles every tag up to the one named. A `basic.return` carries no tag, only the
/// message, so returns are matched by message id (every publish has one; see AMQPConnection) and
/// settle as `.returned` when the confirm that follows them arrives.
struct PendingPublishes {
    private struct Entry {
        var batch: PublishBatch
        var index: Int
        var messageId: String?
        var returned: (code: Int, text: String)?
    }

    private var entries: [UInt64: Entry] = [:]
    private var nextTag: UInt64 = 1

    /// Starts counting from 1 again: a new channel in confirm mode.
    mutating func reset() {
        entries.removeAll()
        nextTag = 1
    }

    mutating func add(batch: PublishBatch, index: Int, messageId: String?) {
        entries[nextTag] = Entry(batch: batch, index: index, messageId: messageId)
        nextTag += 1
    }

    mutating func settle(upTo tag: UInt64, multiple: Bool, acked: Bool) {
        let tags = multiple ? entries.keys.filter { $0 <= tag }.sorted() : [tag]
        for tag in tags {
            guard let entry = entries.removeValue(forKey: tag) else { continue }
            let outcome: PublishOutcome =
                if !acked { .nacked } else if let returned = entry.returned {
                    .returned(replyCode: returned.code, replyText: returned.text)
                } else { .confirmed }
            entry.batch.settle(entry.index, outcome)
        }
    }

    mutating func markReturned(messageId: String?, replyCode: Int, replyText: String) {
        guard let tag = entries.filter({ $0.value.messageId == messageId && $0.value.returned == nil }).keys.min()
        else { return }
        entries[tag]?.returned = (replyCode, replyText)
    }

    mutating func failAll(_ error: AMQPError) {
        for entry in entries.values { entry.batch.settle(entry.index, .failed(error)) }
        entries.removeAll()
    }
}

/// Outcomes of one `publish` call, collected as confirms arrive; resumes the caller when complete.
///
/// Only touched on the loop's thread (created there by the publish command).
final class PublishBatch {
    private var outcomes: [PublishOutcome?]
    private var remaining: Int
    private let continuation: CheckedContinuation<[PublishOutcome], Never>

    init(count: Int, continuation: CheckedContinuation<[PublishOutcome], Never>) {
        outcomes = Array(repeating: nil, count: count)
        remaining = count
        self.continuation = continuation
        if count == 0 { continuation.resume(returning: []) }
    }

    func settle(_ index: Int, _ outcome: PublishOutcome) {
        guard outcomes[index] == nil else { return }
        outcomes[index] = outcome
        remaining -= 1
        if remaining == 0 { continuation.resume(returning: outcomes.map { $0! }) }
    }
}
