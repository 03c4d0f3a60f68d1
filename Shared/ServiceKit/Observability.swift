import AMQP
import Contracts
import EventRuntime
import Foundation
import Hummingbird
import Instrumentation
import Logging
import Metrics
import OTel
import Postgres
import Prometheus
import ServiceLifecycle
import Synchronization

/// A service's metrics and traces: a Prometheus registry behind swift-metrics (read at
/// `GET /metrics`) and, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, swift-otel's tracer behind
/// swift-distributed-tracing, exporting spans over OTLP/HTTP.
///
/// Tracing is off by default and then costs nothing: no tracer is bootstrapped, so spans are
/// no-ops and no trace headers are written. The code that makes spans and carries context
/// (Hummingbird's `TracingMiddleware`, the consumer, the outbox) is the same either way.
public struct Observability: Sendable {
    /// Everything counted in this process, for `GET /metrics`.
    public let registry: PrometheusCollectorRegistry
    /// Exports finished spans; to run beside the service. Nil when tracing is off.
    let tracer: (any Service)?
    /// Adds `trace_id` and `span_id` to log records written inside a span (when tracing is on).
    public let logMetadata: Logger.MetadataProvider?

    /// The endpoint that turns tracing on (the OpenTelemetry SDKs' variable).
    public static let endpointKey = "OTEL_EXPORTER_OTLP_ENDPOINT"

    /// Bootstraps the process-wide metrics and tracing systems. Once per process, in `main`:
    /// bootstrapping twice traps.
    public static func bootstrap(
        _ service: ServiceName, environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws -> Observability {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = Self.latencyBuckets
        // Sagas that end in a timeout take the order deadline (minutes): they need longer buckets.
        factory.durationHistogramBuckets["bazaar_order_saga_duration_seconds"] =
            Self.latencyBuckets + [.seconds(30), .seconds(60), .seconds(300), .seconds(900)]
        factory.nameAndLabelSanitizer = Self.prometheusNames
        MetricsSystem.bootstrap(factory)

        guard let endpoint = environment[endpointKey], !endpoint.isEmpty else {
            return Observability(registry: registry, tracer: nil, logMetadata: nil)
        }
        var configuration = OTel.Configuration.default
        configuration.serviceName = "bazaar-\(service.rawValue)"  // OTEL_SERVICE_NAME overrides
        configuration.traces.enabled = true
        // Metrics are scraped from /metrics and logs go to standard output: OTLP carries traces only.
        configuration.metrics.enabled = false
        configuration.logs.enabled = false
        let tracing = try OTel.makeTracingBackend(configuration: configuration)
        InstrumentationSystem.bootstrap(tracing.factory)
        return Observability(registry: registry, tracer: tracing.service, logMetadata: OTel.makeLoggingMetadataProvider())
    }

    /// Handler, HTTP and saga durations: from a millisecond (a duplicate skipped) to seconds.
    static let latencyBuckets: [Duration] = [
        .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
        .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10),
    ]

    /// Our own metrics are named for Prometheus already; Hummingbird's follow OpenTelemetry's
    /// dotted names, which Prometheus does not allow: they get the names an OpenTelemetry
    /// collector would give them.
    @Sendable static func prometheusNames(_ name: String, _ labels: [(String, String)]) -> (String, [(String, String)]) {
        let renamed: String =
            switch name {
            case "hb.requests": "http_server_requests_total"
            case "hb.request.errors": "http_server_request_errors_total"
            case "http.server.request.duration": "http_server_request_duration_seconds"
            default: name
            }
        return (prometheusSafe(renamed), labels.map { (prometheusSafe($0.0), $0.1) })
    }

    private static func prometheusSafe(_ name: String) -> String {
        let allowed = { (scalar: Unicode.Scalar) in
            ("a"..."z").contains(scalar) || ("A"..."Z").contains(scalar) || ("0"..."9").contains(scalar) || scalar == "_"
        }
        return String(String.UnicodeScalarView(name.unicodeScalars.map { allowed($0) ? $0 : "_" }))
    }
}

/// The gauges that describe state rather than count events — outbox backlog, inbox size, broker
/// connections, database pool — read when Prometheus scrapes, so they are never stale and cost
/// nothing between scrapes.
struct ScrapeTimeGauges: Sendable {
    let outbox: Outbox
    let pool: PostgresPool
    let connections: [(name: String, connection: AMQPConnection)]
    let logger: Logger
    private let reconnectsSeen = ReconnectCounts()

    init(outbox: Outbox, pool: PostgresPool, connections: [(name: String, connection: AMQPConnection)], logger: Logger) {
        self.outbox = outbox
        self.pool = pool
        self.connections = connections
        self.logger = logger
    }

    func update() async {
        for (name, connection) in connections {
            Gauge(label: "bazaar_broker_connected", dimensions: [("connection", name)])
                .record(connection.status == .connected ? 1 : 0)
            let newReconnects = reconnectsSeen.advance(name, to: connection.reconnectCount)
            // Created even at zero, so the series exists (and `increase()` works) before the first reconnect.
            Counter(label: "bazaar_broker_reconnects_total", dimensions: [("connection", name)]).increment(by: newReconnects)
        }
        let usage = await pool.usage
        Gauge(label: "bazaar_db_pool_connections", dimensions: [("state", "in_use")]).record(usage.inUse)
        Gauge(label: "bazaar_db_pool_connections", dimensions: [("state", "idle")]).record(usage.idle)
        Gauge(label: "bazaar_db_pool_waiters").record(usage.waiting)
        Gauge(label: "bazaar_db_pool_max_connections").record(usage.maximum)
        do {
            let statistics = try await outbox.statistics(on: pool)
            Gauge(label: "bazaar_outbox_backlog").record(statistics.pending)
            Gauge(label: "bazaar_outbox_oldest_pending_age_seconds").record(statistics.oldestPendingAge)
            Gauge(label: "bazaar_inbox_rows").record(statistics.inboxRows)
        } catch {
            // The database is away: the last values stay, and /health/ready says why.
            logger.debug("metrics: could not read the outbox statistics: \(error)")
        }
    }

    /// Reconnects already counted, per connection: the connections count in total, Prometheus
    /// counters go up by increments.
    private final class ReconnectCounts: Sendable {
        private let seen = Mutex<[String: Int]>([:])

        func advance(_ name: String, to total: Int) -> Int {
            seen.withLock { seen in
                defer { seen[name] = total }
                return max(0, total - (seen[name] ?? 0))
            }
        }
    }
}

extension Router where Context == BasicRequestContext {
    /// `GET /metrics`: Prometheus' text format, public like the health routes (it names no
    /// customer and no secret).
    func addMetricsRoute(registry: PrometheusCollectorRegistry, gauges: ScrapeTimeGauges) {
        get("/metrics") { _, _ -> Response in
            await gauges.update()
            var buffer: [UInt8] = []
            registry.emit(into: &buffer)
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: ResponseBody(byteBuffer: ByteBuffer(bytes: buffer)))
        }
        refuseOtherMethods(on: "/metrics", allowing: [.get])
    }
}
