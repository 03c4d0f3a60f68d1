import Foundation
import Hummingbird
import Synchronization
import TestSupport
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// What an operator sees of real order flows: the counters of `GET /metrics` move by what
/// happened, and one order is one trace across the four services.
@Suite("Metrics and traces, end to end", .serialized, .timeLimit(.minutes(3)))
struct ObservabilityTests {
    @Test func metricsCountWhatTheSagaDid() async throws {
        try await withSystem { system in
            let shop = Shop(system)
            try await shop.product("MUG-01", price: 1250, stock: 10)
            try await shop.account("alice", balance: 10_000)
            try await shop.account("bob", balance: 100)
            let before = try await Scrape.all(system)

            var orders: [[String: Any]] = []
            for (customer, quantity) in [("alice", 1), ("alice", 1), ("bob", 2)] {
                orders.append(try await shop.waitUntilSettled(try await shop.place(customer, ["MUG-01": quantity]).1["orderId"] as! String))
            }
            #expect(orders.map { $0["status"] as? String } == ["confirmed", "confirmed", "cancelled"])
            for order in orders { try await shop.eventually { try await shop.notifications(order).count == 1 } }

            // The relays publish after the commits: wait until every outbox is empty again.
            try await shop.eventually {
                try await Scrape.all(system).values.allSatisfy { $0.value("bazaar_outbox_backlog") == 0 }
            }
            let after = try await Scrape.all(system)
            func delta(_ service: RunningSystem.Service, _ series: String) -> Double {
                (after[service]?.value(series) ?? 0) - (before[service]?.value(series) ?? 0)
            }
            // The order service: three placed, two confirmed, one cancelled by payment, each with its duration.
            #expect(delta(.order, "bazaar_orders_placed_total") == 3)
            #expect(delta(.order, #"bazaar_orders_completed_total{outcome="confirmed",reason=""}"#) == 2)
            #expect(delta(.order, #"bazaar_orders_completed_total{outcome="cancelled",reason="payment_declined"}"#) == 1)
            #expect(delta(.order, #"bazaar_order_saga_duration_seconds_count{outcome="confirmed"}"#) == 2)
            #expect(delta(.order, #"bazaar_messages_published_total{event_type="OrderPlaced"}"#) == 3)
            #expect(delta(.order, #"bazaar_messages_published_total{event_type="OrderConfirmed"}"#) == 2)
            #expect(delta(.order, #"bazaar_messages_published_total{event_type="OrderCancelled"}"#) == 1)
            #expect(delta(.order, #"http_server_requests_total{http_request_method="POST",http_response_status_code="202",http_route="/orders"}"#) == 3)
            // Each service handled its part once, and timed it.
            #expect(delta(.inventory, #"bazaar_messages_consumed_total{event_type="OrderPlaced",outcome="ok"}"#) == 3)
            #expect(delta(.inventory, #"bazaar_handler_duration_seconds_count{event_type="OrderPlaced"}"#) == 3)
            #expect(delta(.inventory, #"bazaar_messages_published_total{event_type="StockReserved"}"#) == 3)
            #expect(delta(.payment, #"bazaar_messages_consumed_total{event_type="StockReserved",outcome="ok"}"#) == 3)
            #expect(delta(.payment, #"bazaar_messages_published_total{event_type="PaymentCaptured"}"#) == 2)
            #expect(delta(.payment, #"bazaar_messages_published_total{event_type="PaymentDeclined"}"#) == 1)
            #expect(delta(.order, #"bazaar_messages_consumed_total{event_type="PaymentCaptured",outcome="ok"}"#) == 2)
            #expect(delta(.notification, #"bazaar_messages_consumed_total{event_type="OrderConfirmed",outcome="ok"}"#) == 2)
            #expect(delta(.notification, #"bazaar_messages_consumed_total{event_type="OrderCancelled",outcome="ok"}"#) == 1)
            for service in RunningSystem.Service.allCases {
                let scrape = try #require(after[service])
                #expect(scrape.value(#"bazaar_broker_connected{connection="publisher"}"#) == 1, "\(service)")
                #expect(scrape.value(#"bazaar_broker_connected{connection="consumer"}"#) == 1, "\(service)")
                #expect(scrape.value("bazaar_db_pool_max_connections") == 8, "\(service)")
                #expect((scrape.value("bazaar_inbox_rows") ?? 0) > 0, "\(service)")
                #expect(scrape.value(#"bazaar_messages_consumed_total{event_type="OrderPlaced",outcome="dead_lettered"}"#) == nil)
            }

            // The dashboard shows only what the services really expose.
            let exposed = Set(after.values.flatMap(\.families))
            let dashboard = try String(contentsOf: Scrape.repositoryRoot.appendingPathComponent("deploy/grafana/dashboards/bazaar.json"), encoding: .utf8)
            let named = Set(
                dashboard.matches(of: /\b(bazaar|http_server)_[a-z_]+/).map { String($0.output.0) }
                    .map { $0.replacing(/_(bucket|sum|count)$/, with: "") })
            #expect(!named.isEmpty)
            #expect(named.subtracting(exposed).isEmpty, "the dashboard names metrics no service exposes: \(named.subtracting(exposed).sorted())")
        }
    }

    @Test func oneOrderIsOneTraceAcrossTheFourServicesCompensationsIncluded() async throws {
        let collector = try await OTLPCollector.start()
        defer { collector.stop() }
        let environment = [
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:\(collector.port)", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        ]
        try await withSystem(environment: environment) { system in
            let shop = Shop(system)
            try await shop.product("MUG-01", price: 1250, stock: 10)
            try await shop.account("alice", balance: 10_000)
            try await shop.account("bob", balance: 100)

            // A confirmed order, and one whose declined payment releases the stock (a compensation).
            for (customer, quantity, outcome) in [("alice", 1, "confirmed"), ("bob", 2, "cancelled")] {
                // The caller's own trace: the order's spans must join it.
                let traceId = Self.randomHex(bytes: 16), callerSpan = Self.randomHex(bytes: 8)
                let (status, placed) = try await HTTP.post(
                    "\(system.url(.order))/orders", json: ["customerId": customer, "items": [["sku": "MUG-01", "quantity": quantity]]],
                    headers: ["traceparent": "00-\(traceId)-\(callerSpan)-01"], as: .customer(customer))
                #expect(status == 202)
                let order = try await shop.waitUntilSettled((placed as! [String: Any])["orderId"] as! String)
                #expect(order["status"] as? String == outcome)
                try await shop.eventually { try await shop.notifications(order).count == 1 }

                // Every event of the saga, from every service's outbox.
                let expectedTypes: Set<String> =
                    outcome == "confirmed"
                    ? ["OrderPlaced", "StockReserved", "PaymentCaptured", "OrderConfirmed", "NotificationSent"]
                    : ["OrderPlaced", "StockReserved", "PaymentDeclined", "OrderCancelled", "StockReleased", "NotificationSent"]
                var events: [UUID: SagaEvent] = [:]
                try await shop.eventually {
                    events = try await SagaEvent.all(of: UUID(uuidString: order["orderId"] as! String)!, in: system)
                    return Set(events.values.map(\.type)).isSuperset(of: expectedTypes)
                }
                for event in events.values {
                    let context = try #require(event.traceContext, "\(event.type) has no traceparent")
                    #expect(context.traceId == traceId, "\(event.type) is in another trace")
                }
                // Each event was written in the span of what caused it: the request for the first,
                // the consumer's span of its cause for the others, which continues the cause's span.
                try await shop.eventually {
                    events.values.allSatisfy { event in collector.span(event.traceContext!.spanId) != nil }
                }
                for event in events.values {
                    let span = try #require(collector.span(event.traceContext!.spanId))
                    #expect(span.traceId == traceId)
                    if let causationId = event.causationId {
                        let cause = try #require(events[causationId], "\(event.type)'s cause is not in the saga")
                        #expect(span.kind == OTLPSpan.consumer, "\(event.type)")
                        #expect(span.name == "\(cause.type) process")
                        #expect(span.parentSpanId == cause.traceContext!.spanId, "\(event.type) does not continue \(cause.type)")
                    } else {
                        #expect(event.type == "OrderPlaced")
                        #expect(span.kind == OTLPSpan.server)
                        #expect(span.service == "bazaar-order")
                        #expect(span.parentSpanId == callerSpan)
                    }
                }
            }
        }
    }

    static func randomHex(bytes: Int) -> String {
        (0..<bytes).map { _ in String(format: "%02x", UInt8.random(in: 1...255)) }.joined()
    }
}

/// One service's `/metrics`, parsed: the value of each series, keyed as Prometheus prints it.
struct Scrape: Sendable {
    var series: [String: Double]

    static func all(_ system: RunningSystem) async throws -> [RunningSystem.Service: Scrape] {
        var scrapes: [RunningSystem.Service: Scrape] = [:]
        for service in RunningSystem.Service.allCases {
            let (data, response) = try await URLSession.shared.data(from: URL(string: "\(system.url(service))/metrics")!)
            guard (response as? HTTPURLResponse)?.statusCode == 200 else { throw SystemError("\(service) /metrics failed") }
            scrapes[service] = Scrape(text: String(decoding: data, as: UTF8.self))
        }
        return scrapes
    }

    init(text: String) {
        series = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
            series[Self.canonical(String(line[..<space]))] = value
        }
    }

    /// `name{b="2",a="1"}` and `name{a="1",b="2"}` are one series: labels sorted.
    static func canonical(_ series: String) -> String {
        guard let brace = series.firstIndex(of: "{") else { return series }
        let labels = series[series.index(after: brace)..<series.index(before: series.endIndex)]
            .split(separator: ",").sorted().joined(separator: ",")
        return "\(series[..<brace]){\(labels)}"
    }

    func value(_ series: String) -> Double? { self.series[Self.canonical(series)] }

    /// Metric names, histograms' `_bucket`, `_sum` and `_count` folded into their family.
    var families: Set<String> {
        Set(series.keys.map { String($0.prefix { $0 != "{" }).replacing(/_(bucket|sum|count)$/, with: "") })
    }

    static let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
}

/// An event of one order's saga as its producer's outbox row has it.
struct SagaEvent {
    var type: String
    var causationId: UUID?
    var traceContext: (traceId: String, spanId: String)?

    static func all(of orderId: UUID, in system: RunningSystem) async throws -> [UUID: SagaEvent] {
        var events: [UUID: SagaEvent] = [:]
        for service in RunningSystem.Service.allCases {
            for row in try await system.pool.query(
                "SELECT event_id, event_type, causation_id, headers->>'traceparent' AS traceparent FROM \(system.schema(service)).outbox WHERE correlation_id = $1",
                orderId)
            {
                // version-traceid-spanid-flags
                let parts = try row.decode(String?.self, column: "traceparent")?.split(separator: "-").map(String.init)
                events[try row.decode(UUID.self, column: "event_id")] = SagaEvent(
                    type: try row.decode(String.self, column: "event_type"), causationId: try row.decode(UUID?.self, column: "causation_id"),
                    traceContext: parts.flatMap { $0.count == 4 ? ($0[1], $0[2]) : nil })
            }
        }
        return events
    }
}

/// A span as an OpenTelemetry exporter sent it.
struct OTLPSpan: Sendable {
    static let server = 2, consumer = 5

    var traceId: String
    var spanId: String
    var parentSpanId: String
    var name: String
    var kind: Int
    var service: String
}

/// Just enough of an OpenTelemetry collector for the tests: accepts OTLP/HTTP in its JSON
/// encoding at `/v1/traces` and keeps the spans.
final class OTLPCollector: Sendable {
    let port: Int
    private let received: Received
    private let server: Task<Void, any Error>

    /// The spans received so far, by span id.
    private final class Received: Sendable {
        let spans = Mutex<[String: OTLPSpan]>([:])

        func add(_ new: [OTLPSpan]) { spans.withLock { for span in new { $0[span.spanId] = span } } }
    }

    private init(port: Int, received: Received, server: Task<Void, any Error>) {
        self.port = port
        self.received = received
        self.server = server
    }

    static func start() async throws -> OTLPCollector {
        let port = try RunningSystem.freePort()
        let received = Received()
        let router = Router()
        router.post("/v1/traces") { request, _ -> Response in
            let body = try await request.body.collect(upTo: 16 << 20)
            received.add(try Self.spans(in: Data(buffer: body)))
            return Response(
                status: .ok, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: ByteBuffer(string: "{}")))
        }
        let application = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: port)))
        let server = Task { try await application.runService(gracefulShutdownSignals: []) }
        let collector = OTLPCollector(port: port, received: received, server: server)
        // Listening once it answers.
        for _ in 0..<100 {
            if (try? await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(port)/")!)) != nil { return collector }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw SystemError("the test's OTLP collector did not start")
    }

    func span(_ id: String) -> OTLPSpan? { received.spans.withLock { $0[id] } }

    func stop() { server.cancel() }

    /// `resourceSpans[].scopeSpans[].spans[]`, ids in hex (the JSON encoding may give base64).
    static func spans(in body: Data) throws -> [OTLPSpan] {
        guard let root = try JSONSerialization.jsonObject(with: body) as? [String: Any] else { return [] }
        var spans: [OTLPSpan] = []
        for resource in root["resourceSpans"] as? [[String: Any]] ?? [] {
            let attributes = (resource["resource"] as? [String: Any])?["attributes"] as? [[String: Any]] ?? []
            let service = attributes.first { $0["key"] as? String == "service.name" }
                .flatMap { ($0["value"] as? [String: Any])?["stringValue"] as? String } ?? ""
            for scope in resource["scopeSpans"] as? [[String: Any]] ?? [] {
                for span in scope["spans"] as? [[String: Any]] ?? [] {
                    spans.append(
                        OTLPSpan(
                            traceId: hex(span["traceId"]), spanId: hex(span["spanId"]), parentSpanId: hex(span["parentSpanId"]),
                            name: span["name"] as? String ?? "", kind: (span["kind"] as? Int) ?? 0, service: service))
                }
            }
        }
        return spans
    }

    private static func hex(_ value: Any?) -> String {
        guard let text = value as? String, !text.isEmpty else { return "" }
        if text.count.isMultiple(of: 2), text.allSatisfy(\.isHexDigit), text.count == 16 || text.count == 32 { return text.lowercased() }
        return Data(base64Encoded: text).map { $0.map { String(format: "%02x", $0) }.joined() } ?? text
    }
}
