import AMQP
import Auth
import Contracts
import EventRuntime
import Foundation
import Hummingbird
import Logging
import Postgres
import ServiceLifecycle
import Synchronization

/// What a service brings: its tables, its reactions to events, its HTTP routes and any periodic
/// work. `ServiceHost` supplies the rest, the same for all four.
public struct ServiceDefinition: Sendable {
    public var service: ServiceName
    /// The service's own migrations, numbered from 100 (the event runtime's come first).
    public var migrations: [Migration]
    public var handlers: EventHandlers
    /// Adds the service's routes; called once at start-up.
    public var routes: @Sendable (Router<BasicRequestContext>, ServiceDependencies) -> Void
    /// Work that runs beside the API for the life of the process (the order deadline sweep).
    public var jobs: [@Sendable (ServiceDependencies) async throws -> Void]

    public init(
        service: ServiceName, migrations: [Migration], handlers: EventHandlers,
        routes: @escaping @Sendable (Router<BasicRequestContext>, ServiceDependencies) -> Void,
        jobs: [@Sendable (ServiceDependencies) async throws -> Void] = []
    ) {
        self.service = service
        self.migrations = migrations
        self.handlers = handlers
        self.routes = routes
        self.jobs = jobs
    }
}

/// What routes and jobs work with.
public struct ServiceDependencies: Sendable {
    public let settings: ServiceSettings
    public let pool: PostgresPool
    public let outbox: Outbox
    public let logger: Logger
    /// Who calls, from the request's bearer token.
    public let authenticator: Authenticator
    let publisher: AMQPConnection
    let consumer: AMQPConnection
}

/// Starts a service: waits for the database and the broker, migrates its schema, declares its
/// broker topology, then runs the outbox relay, the event consumer, its jobs and its HTTP API
/// until SIGTERM or SIGINT, and shuts down in reverse order.
public enum ServiceHost {
    public static func run(
        _ definition: ServiceDefinition, settings: ServiceSettings, observability: Observability
    ) async throws {
        let logger = makeLogger(settings)
        let dependencies = try await connect(definition, settings: settings, logger: logger)
        do {
            try await serve(
                definition, settings: settings, dependencies: dependencies, observability: observability, logger: logger)
        } catch {
            await close(dependencies)
            throw error
        }
        await close(dependencies)
        logger.notice("\(settings.service) service stopped")
    }

    private static func serve(
        _ definition: ServiceDefinition, settings: ServiceSettings, dependencies: ServiceDependencies,
        observability: Observability, logger: Logger
    ) async throws {
        let router = Router(context: BasicRequestContext.self, options: .autoGenerateHeadEndpoints)
        // Outermost, so they see the status the problem middleware made of an error. The span is
        // the request's: what the route writes to the outbox carries its trace context.
        router.middlewares.add(TracingMiddleware())
        router.middlewares.add(MetricsMiddleware())
        router.middlewares.add(ProblemMiddleware())
        // No request of these APIs comes near it (an order of 100 lines is ~5 KiB).
        router.middlewares.add(BodyLimitMiddleware(limit: 64 * 1024))
        addHealthRoutes(to: router, dependencies)
        router.addMetricsRoute(
            registry: observability.registry,
            gauges: ScrapeTimeGauges(
                outbox: dependencies.outbox, pool: dependencies.pool,
                connections: [("publisher", dependencies.publisher), ("consumer", dependencies.consumer)], logger: logger))
        definition.routes(router, dependencies)

        let relay = OutboxRelay(
            service: settings.service, outbox: dependencies.outbox, pool: dependencies.pool,
            publisher: dependencies.publisher,
            configuration: .init(
                pollInterval: settings.outboxPollInterval, retention: settings.outboxRetention, faults: settings.faults),
            logger: logger)
        let consumer = try EventConsumer(
            service: settings.service, schema: settings.schema, handlers: definition.handlers, pool: dependencies.pool,
            publisher: dependencies.publisher, policy: RetryPolicy(maximumAttempts: settings.retryMaxAttempts),
            publisherUsers: settings.publisherUsers, faults: settings.faults, batchLimit: settings.consumerBatchSize,
            logger: logger)
        if settings.faults.isActive { logger.warning("fault injection is on: \(settings.faults)") }
        // Several consumers on the queue, each handling one batch at a time: like several
        // instances, which the inbox and the per-order locks already make safe.
        var services: [any Service] = [BackgroundService("outbox relay") { try await relay.run() }]
        for index in 1...settings.consumers {
            let deliveries = try await dependencies.consumer.consume(
                queue: settings.service.queue, prefetch: UInt16(settings.prefetch),
                consumerTag: "\(settings.instanceName).\(settings.service.queue).\(index)")
            services.append(BackgroundService("event consumer \(index)") { try await consumer.run(deliveries) })
        }
        services += definition.jobs.enumerated().map { index, job in
            BackgroundService("job \(index)") { try await job(dependencies) }
        }
        // First in, so last out: spans of the shutdown's last work are still exported.
        if let tracer = observability.tracer { services.insert(tracer, at: 0) }
        let application = Application(
            router: router,
            configuration: .init(
                address: .hostname(settings.httpHost, port: settings.httpPort), serverName: "bazaar-\(settings.service)"),
            services: services,
            onServerRunning: { _ in
                logger.notice("\(settings.service) service ready on http://\(settings.httpHost):\(settings.httpPort)")
            },
            logger: logger)
        // Graceful shutdown runs in reverse order of start: the HTTP server stops taking requests
        // and finishes those in flight, the jobs and consumers stop, the relay publishes what is
        // left; whatever still runs at the deadline is cancelled.
        var configuration = ServiceGroupConfiguration(
            services: [application], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        configuration.maximumGracefulShutdownDuration = settings.shutdownTimeout
        configuration.maximumCancellationDuration = .seconds(5)
        try await ServiceGroup(configuration: configuration).run()
    }

    private static func makeLogger(_ settings: ServiceSettings) -> Logger {
        var logger = Logger(label: "bazaar.\(settings.service.rawValue)")
        logger.logLevel = settings.logLevel
        logger[metadataKey: "instance"] = .string(settings.instanceName)
        return logger
    }

    /// Connects to the database and the broker, waiting for them (with back-off and a log line
    /// per attempt) if they are not up yet: in a container start-up they often are not.
    static func connect(
        _ definition: ServiceDefinition, settings: ServiceSettings, logger: Logger
    ) async throws -> ServiceDependencies {
        let database = try PostgresConfiguration(url: settings.databaseURL, applicationName: settings.instanceName)
        let pool = PostgresPool(configuration: database, maxConnections: settings.databasePoolSize, logger: logger)
        _ = try await waitFor("the database at \(database)", logger: logger) {
            try await MigrationRunner(schema: settings.schema, logger: logger)
                .run(RuntimeTables.migrations + definition.migrations, on: pool)
        }
        let publishing = try AMQPConfiguration(url: settings.amqpURL, connectionName: "\(settings.instanceName) publisher")
        let consuming = try AMQPConfiguration(url: settings.amqpURL, connectionName: "\(settings.instanceName) consumer")
        let publisher = try await waitFor("the broker at \(publishing.redactedURL)", logger: logger) {
            try await AMQPConnection.connect(publishing, logger: logger)
        }
        let consumer = try await waitFor("the broker at \(consuming.redactedURL)", logger: logger) {
            try await AMQPConnection.connect(consuming, logger: logger)
        }
        if settings.declareTopology {
            try await consumer.declare(
                ServiceTopology.system().merging(
                    ServiceTopology.topology(for: settings.service, handling: definition.handlers.events)))
        }
        return ServiceDependencies(
            settings: settings, pool: pool, outbox: try Outbox(schema: settings.schema), logger: logger,
            authenticator: Authenticator(authority: try await TokenAuthority(secret: settings.authSecret)),
            publisher: publisher, consumer: consumer)
    }

    static func close(_ dependencies: ServiceDependencies) async {
        await dependencies.consumer.close()
        await dependencies.publisher.close()
        await dependencies.pool.shutdown()
    }

    private static func waitFor<T>(
        _ what: String, logger: Logger, _ attempt: () async throws -> T
    ) async throws -> T {
        var delay = Duration.milliseconds(250)
        while true {
            do {
                return try await attempt()
            } catch {
                logger.warning("waiting for \(what): \(error); next try in \(delay)")
                try await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(5))
            }
        }
    }

    static func addHealthRoutes(to router: Router<BasicRequestContext>, _ dependencies: ServiceDependencies) {
        router.get("/health/live") { _, _ in HealthReport(status: "live", checks: [:]) }
        router.refuseOtherMethods(on: "/health/live", allowing: [.get])
        router.refuseOtherMethods(on: "/health/ready", allowing: [.get])
        router.get("/health/ready") { _, _ -> Response in
            var checks: [String: String] = [:]
            do {
                // A database that hangs (a network cut with no reset) would hang the probe too.
                _ = try await answer(within: .seconds(2)) { try await dependencies.pool.query("SELECT 1") }
                checks["database"] = "ok"
            } catch {
                checks["database"] = "\(error)"
            }
            for (name, connection) in [("broker.publisher", dependencies.publisher), ("broker.consumer", dependencies.consumer)] {
                checks[name] = connection.status == .connected ? "ok" : "\(connection.status)"
            }
            let ready = checks.values.allSatisfy { $0 == "ok" }
            let body = try JSONEncoder().encode(HealthReport(status: ready ? "ready" : "not ready", checks: checks))
            return Response(
                status: ready ? .ok : .serviceUnavailable, headers: [.contentType: "application/json"],
                body: ResponseBody(byteBuffer: ByteBuffer(bytes: body)))
        }
    }
}

/// The result of `work`, or an error once `limit` has passed without one. The work itself goes on
/// (a blocked libpq call can't be interrupted) and its late result is dropped.
public func answer<T: Sendable>(within limit: Duration, _ work: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
        let waiting = FirstAnswer(continuation)
        Task {
            do { waiting.finish(.success(try await work())) } catch { waiting.finish(.failure(error)) }
        }
        Task {
            try? await Task.sleep(for: limit)
            waiting.finish(.failure(NoAnswer(limit: limit)))
        }
    }
}

/// A continuation resumed by whichever comes first, the answer or the timeout.
private final class FirstAnswer<T: Sendable>: Sendable {
    private let continuation: Mutex<CheckedContinuation<T, any Error>?>

    init(_ continuation: CheckedContinuation<T, any Error>) { self.continuation = Mutex(continuation) }

    func finish(_ result: Result<T, any Error>) {
        continuation.withLock { $0.take() }?.resume(with: result)
    }
}

public struct NoAnswer: Error, CustomStringConvertible {
    public var limit: Duration
    public var description: String { "no answer within \(limit)" }
}

struct HealthReport: ResponseCodable {
    var status: String
    var checks: [String: String]
}

/// A long-running task run by the application's service group; on SIGTERM it is cancelled
/// (graceful shutdown), which ends its loop.
struct BackgroundService: Service {
    let name: String
    let body: @Sendable () async throws -> Void

    init(_ name: String, body: @escaping @Sendable () async throws -> Void) {
        self.name = name
        self.body = body
    }

    func run() async throws {
        do {
            try await cancelWhenGracefulShutdown { try await body() }
        } catch is CancellationError {
            // Shutting down: the loop was told to stop, which is not a failure.
        }
    }
}
