import AMQP
import Foundation
import Instrumentation
import Metrics
import ServiceContextModule

/// The event runtime's metrics, through the swift-metrics API: whatever backend the process
/// bootstrapped (Prometheus in the services) receives them; with none bootstrapped (tests, tools)
/// they cost next to nothing.
///
/// Names follow Prometheus conventions (`_total` for counters, `_seconds` for durations), so the
/// backend needs no renaming; the dashboards in `deploy/grafana` use exactly these.
public enum EventMetrics {
    /// `bazaar_messages_consumed_total{event_type, outcome}`: deliveries handled, by what became of them.
    static func consumed(_ eventType: String, outcome: EventConsumer.Outcome) {
        Counter(label: "bazaar_messages_consumed_total", dimensions: [("event_type", eventType), ("outcome", outcome.metricLabel)])
            .increment()
    }

    /// `bazaar_handler_duration_seconds{event_type}`: from delivery to ack, database work included.
    static func handled(_ eventType: String, in duration: Duration) {
        Timer(label: "bazaar_handler_duration_seconds", dimensions: [("event_type", eventType)], preferredDisplayUnit: .seconds)
            .record(duration: duration)
    }

    /// `bazaar_messages_published_total{event_type}`: outbox rows the broker confirmed.
    static func published(_ eventType: String, count: Int = 1) {
        Counter(label: "bazaar_messages_published_total", dimensions: [("event_type", eventType)]).increment(by: count)
    }
}

extension EventConsumer.Outcome {
    /// The outcome as a metric label and log field: ok, duplicate, retried, dead_lettered, requeued.
    public var metricLabel: String {
        switch self {
        case .applied: "ok"
        case .duplicate: "duplicate"
        case .retryScheduled: "retried"
        case .deadLettered: "dead_lettered"
        case .requeued: "requeued"
        }
    }
}

/// W3C trace context (`traceparent`, `tracestate`) in and out of the places an event travels:
/// an outbox row's `headers` (text), then the AMQP message's headers.
///
/// Which headers are written is the bootstrapped instrument's business (swift-otel's W3C
/// propagator in the services); with none bootstrapped nothing is written or read.
enum TraceHeaders {
    /// The current task's trace context, as headers to store with an outbox row.
    static func inject(into headers: inout [String: String]) {
        guard let context = ServiceContext.current else { return }
        var injected: [String: String] = [:]
        InstrumentationSystem.instrument.inject(context, into: &injected, using: TextInjector())
        // Headers the caller set explicitly win.
        headers.merge(injected) { explicit, _ in explicit }
    }

    /// The trace context a message carries, to continue its trace in the consumer.
    static func extract(from headers: AMQPTable) -> ServiceContext {
        var context = ServiceContext.topLevel
        InstrumentationSystem.instrument.extract(headers, into: &context, using: AMQPHeaderExtractor())
        return context
    }

    private struct TextInjector: Injector {
        func inject(_ value: String, forKey key: String, into carrier: inout [String: String]) { carrier[key] = value }
    }

    private struct AMQPHeaderExtractor: Extractor {
        func extract(key: String, from carrier: AMQPTable) -> String? { carrier[key]?.string }
    }
}

/// Work to do once the handler's transaction has committed: counting a saga's outcome, say, which
/// must not count an effect that was rolled back (or, redelivered, would be counted twice).
final class CommitActions: @unchecked Sendable {
    // @unchecked: filled by the handler and run by the consumer, one after the other, in one task.
    private var actions: [@Sendable () -> Void] = []

    func append(_ action: @escaping @Sendable () -> Void) { actions.append(action) }

    func run() { actions.forEach { $0() } }
}
