import Auth
import Contracts
import EventRuntime
import Foundation
import Logging

/// A service's configuration, read from environment variables. Every default matches the local
/// stack that `make run` starts, so a service started by hand next to it needs no settings.
public struct ServiceSettings: Sendable {
    public var service: ServiceName
    /// `HTTP_HOST`: the address the API listens on. Default `127.0.0.1`; containers set `0.0.0.0`.
    public var httpHost: String
    /// `HTTP_PORT`: default 8080 (order), 8081 (inventory), 8082 (payment), 8083 (notification).
    public var httpPort: Int
    /// `AMQP_URL`: the broker. Default: the local stack's.
    public var amqpURL: String
    /// `DATABASE_URL`: the database. Default: the local stack's.
    public var databaseURL: String
    /// `DATABASE_SCHEMA`: the schema this service owns. Default `orders`, `inventory`, `payments`
    /// or `notifications`.
    public var schema: String
    /// `DATABASE_POOL_SIZE`: connections to the database. Default 8.
    public var databasePoolSize: Int
    /// `AMQP_PREFETCH`: deliveries the broker may send ahead of acks, per consumer. Default 128:
    /// room for the next batch to gather while one commits (see `consumerBatchSize`).
    public var prefetch: Int
    /// `CONSUMERS`: consumers on the instance's queue, each applying one batch at a time.
    /// Default 1: the deliveries that arrive while a batch commits form the next batch, so under
    /// load one commit serves many. More consumers split the same flow into smaller batches that
    /// wait on each other's row locks (every order of a popular product updates its row): in the
    /// benchmark, 4 consumers took 1.1 × the CPU per order of 1, with 5 to 9 × its median latency.
    /// Scale out with instances instead.
    public var consumers: Int
    /// `CONSUMER_BATCH_SIZE`: the most deliveries that have arrived together that a consumer
    /// applies in one transaction (one commit for all, acks after it). Default 64; 1 applies each
    /// in a transaction of its own. A batch never waits for company, so a larger limit only matters
    /// under load: in the benchmark at 350 orders/s, prefetch 128 and batches of 64 completed
    /// 1.05-1.15 × the orders of 64 and 32, with 0.4-0.6 × the median latency.
    public var consumerBatchSize: Int
    /// `INSTANCE_NAME`: names this process in the broker and the logs. Default `<service>-<pid>`.
    public var instanceName: String
    /// `LOG_LEVEL`: trace, debug, info (default), notice, warning, error, critical.
    public var logLevel: Logger.Level
    /// `LOG_FORMAT`: `text` (default), lines for people; `json`, one JSON object per line.
    public var logFormat: LogFormat

    public enum LogFormat: String, Sendable { case text, json }
    /// `OUTBOX_POLL_INTERVAL_MS`: how often the relay looks without being notified. Default 1000.
    public var outboxPollInterval: Duration
    /// `OUTBOX_RETENTION_HOURS`: how long published events stay in the outbox. Default 168 (a week).
    public var outboxRetention: Duration
    /// `AMQP_DECLARE_TOPOLOGY`: `all` (default) declares every exchange, queue and binding of the
    /// system at start-up; `none` declares nothing, for brokers whose topology is loaded from a
    /// definitions file or an operator and whose service users may not configure anything.
    public var declareTopology: Bool
    /// `RETRY_MAX_ATTEMPTS`: handler attempts before an event is parked in the dead-letter
    /// queue, the first included. Default 5 (waits of 1 s, 5 s, 30 s and 30 s between them).
    public var retryMaxAttempts: Int
    /// `SHUTDOWN_TIMEOUT_SECONDS`: on SIGTERM or SIGINT, how long in-flight requests, handlers and
    /// the relay's last batch may take before they are cancelled. Default 10.
    public var shutdownTimeout: Duration
    /// `AUTH_JWT_SECRET`: the HMAC-SHA256 key that signs the APIs' bearer tokens, at least 32
    /// bytes; required (the local stack makes one: `.run/stack.env`).
    public var authSecret: String
    /// `AMQP_PUBLISHER_USERS`: the broker user of each service, as `order=order,payment=…`; a
    /// consumer parks an event whose broker-checked `user-id` is not its producer's. Default: each
    /// service's own name (the users the deployment definitions and the local stack create).
    public var publisherUsers: PublisherUsers
    /// `BAZAAR_FAULTS`: crashes and duplicates on purpose, for the chaos suite only (see
    /// `FaultInjection`). Default none.
    public var faults: FaultInjection

    /// Every environment variable a service reads (the order service adds its own).
    public static let environmentKeys = [
        "HTTP_HOST", "HTTP_PORT", "AMQP_URL", "DATABASE_URL", "DATABASE_SCHEMA", "DATABASE_POOL_SIZE", "AMQP_PREFETCH", "CONSUMERS", "CONSUMER_BATCH_SIZE",
        "INSTANCE_NAME", "LOG_LEVEL", "LOG_FORMAT", "OUTBOX_POLL_INTERVAL_MS", "OUTBOX_RETENTION_HOURS", "AMQP_DECLARE_TOPOLOGY",
        "RETRY_MAX_ATTEMPTS", "SHUTDOWN_TIMEOUT_SECONDS", "AMQP_PUBLISHER_USERS", "AUTH_JWT_SECRET",
    ]

    public init(service: ServiceName, environment: [String: String] = ProcessInfo.processInfo.environment) throws {
        func value(_ key: String) -> String? { environment[key].flatMap { $0.isEmpty ? nil : $0 } }
        func integer(_ key: String, default fallback: Int, in range: ClosedRange<Int>) throws -> Int {
            guard let text = value(key) else { return fallback }
            guard let number = Int(text), range.contains(number) else {
                throw SettingsError(key: key, value: text, expected: "a whole number in \(range)")
            }
            return number
        }
        self.service = service
        httpHost = value("HTTP_HOST") ?? "127.0.0.1"
        httpPort = try integer("HTTP_PORT", default: Self.defaultPort(of: service), in: 1...65535)
        amqpURL = value("AMQP_URL") ?? "amqp://bazaar:bazaar@127.0.0.1:5673/%2f"
        databaseURL = value("DATABASE_URL") ?? "postgres://bazaar:bazaar@127.0.0.1:5433/bazaar"
        schema = value("DATABASE_SCHEMA") ?? Self.defaultSchema(of: service)
        databasePoolSize = try integer("DATABASE_POOL_SIZE", default: 8, in: 1...100)
        prefetch = try integer("AMQP_PREFETCH", default: 128, in: 1...10_000)
        consumers = try integer("CONSUMERS", default: 1, in: 1...64)
        consumerBatchSize = try integer("CONSUMER_BATCH_SIZE", default: 64, in: 1...1000)
        instanceName = value("INSTANCE_NAME") ?? "\(service.rawValue)-\(ProcessInfo.processInfo.processIdentifier)"
        let level = value("LOG_LEVEL") ?? "info"
        guard let logLevel = Logger.Level(rawValue: level.lowercased()) else {
            throw SettingsError(key: "LOG_LEVEL", value: level, expected: "trace, debug, info, notice, warning, error or critical")
        }
        self.logLevel = logLevel
        let format = value("LOG_FORMAT") ?? "text"
        guard let logFormat = LogFormat(rawValue: format) else {
            throw SettingsError(key: "LOG_FORMAT", value: format, expected: "text or json")
        }
        self.logFormat = logFormat
        outboxPollInterval = .milliseconds(try integer("OUTBOX_POLL_INTERVAL_MS", default: 1000, in: 10...600_000))
        outboxRetention = .seconds(3600 * (try integer("OUTBOX_RETENTION_HOURS", default: 168, in: 1...100_000)))
        switch value("AMQP_DECLARE_TOPOLOGY") ?? "all" {
        case "all": declareTopology = true
        case "none": declareTopology = false
        case let other: throw SettingsError(key: "AMQP_DECLARE_TOPOLOGY", value: other, expected: "all or none")
        }
        retryMaxAttempts = try integer("RETRY_MAX_ATTEMPTS", default: 5, in: 1...100)
        shutdownTimeout = .seconds(try integer("SHUTDOWN_TIMEOUT_SECONDS", default: 10, in: 1...3600))
        authSecret = value("AUTH_JWT_SECRET") ?? ""
        guard authSecret.utf8.count >= TokenAuthority.minimumSecretBytes else {
            // The error names the length, never the secret.
            throw SettingsError(
                key: "AUTH_JWT_SECRET", value: authSecret.isEmpty ? "(not set)" : "(\(authSecret.utf8.count) bytes)",
                expected: "a secret of at least \(TokenAuthority.minimumSecretBytes) bytes that signs the API's bearer tokens")
        }
        do {
            publisherUsers = try PublisherUsers(parsing: value("AMQP_PUBLISHER_USERS"))
        } catch {
            throw SettingsError(key: "AMQP_PUBLISHER_USERS", value: error.item, expected: "service=user pairs")
        }
        do {
            faults = try FaultInjection(parsing: value(FaultInjection.environmentKey))
        } catch {
            throw SettingsError(key: FaultInjection.environmentKey, value: error.item, expected: error.reason)
        }
    }

    public static func defaultPort(of service: ServiceName) -> Int {
        switch service {
        case .order: 8080
        case .inventory: 8081
        case .payment: 8082
        case .notification: 8083
        }
    }

    public static func defaultSchema(of service: ServiceName) -> String {
        switch service {
        case .order: "orders"
        case .inventory: "inventory"
        case .payment: "payments"
        case .notification: "notifications"
        }
    }
}

/// A setting that is present but unusable: the service refuses to start and says which.
public struct SettingsError: Error, CustomStringConvertible {
    public var key: String
    public var value: String
    public var expected: String
    public var description: String { "\(key)=\(value) is not valid: expected \(expected)" }

    public init(key: String, value: String, expected: String) {
        self.key = key
        self.value = value
        self.expected = expected
    }
}
