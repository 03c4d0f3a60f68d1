import AMQP
import Contracts

/// The broker objects of the system, derived from the event catalogue.
///
/// For each service:
/// - its topic exchange;
/// - its work queue (quorum), bound to the routing key of every event it handles;
/// - its retry exchange and retry queues, one per delay: a delivery whose handler failed is
///   published to the queue of the next delay, waits out the queue's TTL, and is dead-lettered
///   back to the work queue (see `RetryPolicy`);
/// - its dead-letter exchange and queue, where messages are parked for a person to look at.
///
/// Every queue states its arguments explicitly, because RabbitMQ's defaults differ across
/// versions (no delivery limit before 4.0, 20 since):
/// - the work queue's delivery limit catches a message that crashes every consumer it reaches
///   (the consumer never gets to count its attempts): after `deliveryLimit` deliveries the broker
///   parks it in the dead-letter queue;
/// - every dead-lettering queue uses the at-least-once strategy: the broker keeps a message until
///   the queue it is dead-lettered to has confirmed it, so a retry or a parked message is never
///   lost on the way (this needs the reject-publish overflow);
/// - the dead-letter queue never drops what it holds: no TTL, reject-publish if a policy ever
///   limits its length, and a delivery limit high enough that inspecting it (which returns
///   messages to it) can't exhaust it.
///
/// Every service declares the whole of it at start-up (`system()`), not only its own part: the
/// broker keeps a message only if it reaches an existing queue, so the queues of a service's
/// consumers must exist before it publishes, whichever of them starts first. (Declaring is
/// idempotent; with per-service broker permissions, a definitions file loaded into the broker
/// takes this role.)
public enum ServiceTopology {
    /// Deliveries of one message before the broker parks it: a safety net for messages that
    /// crash consumers, far above what restarts and redeliveries of a healthy system cause.
    public static let defaultDeliveryLimit = 20
    /// The dead-letter queue's delivery limit: effectively none, but explicit.
    public static let deadLetterQueueDeliveryLimit = 1_000_000
    /// The delays of the retry queues, shortest first. A message's n-th failure sends it to the
    /// n-th delay (the last one from then on). Part of the broker's topology: changing them means
    /// changing the deployment's definitions too.
    public static let retryDelays: [Duration] = [.seconds(1), .seconds(5), .seconds(30)]

    /// The retry queue that holds messages for `delay`: `<service>.retry.<seconds>s`.
    public static func retryQueue(of service: ServiceName, delay: Duration) -> String {
        "\(service.rawValue).retry.\(delay.components.seconds)s"
    }

    /// Everything every service needs, as `EventCatalogue.subscriptions` says who consumes what.
    public static func system(deliveryLimit: Int = defaultDeliveryLimit) -> Topology {
        ServiceName.allCases.reduce(Topology()) { topology, service in
            topology.merging(
                self.topology(
                    for: service, handling: EventCatalogue.subscriptions[service, default: []].map { EventKey($0) },
                    deliveryLimit: deliveryLimit))
        }
    }

    /// One service's queues, bindings, retry and dead-letter objects, for the events it handles.
    public static func topology(
        for service: ServiceName, handling events: [EventKey], deliveryLimit: Int = defaultDeliveryLimit
    ) -> Topology {
        let bindings = events.sorted { $0.description < $1.description }.compactMap { key -> BindingSpec? in
            guard let event = EventCatalogue.event(type: key.type, version: key.version) else { return nil }
            return BindingSpec(queue: service.queue, exchange: event.producer.exchange, routingKey: event.routingKey)
        }
        let workQueue = QueueSpec(
            name: service.queue, deadLetterExchange: service.deadLetterExchange, deadLetterRoutingKey: service.deadLetterQueue,
            deliveryLimit: deliveryLimit, deadLetterStrategy: .atLeastOnce, overflow: .rejectPublish)
        let retryQueues = retryDelays.map { delay in
            QueueSpec(
                name: retryQueue(of: service, delay: delay), deadLetterExchange: service.retryExchange,
                deadLetterRoutingKey: service.queue, deliveryLimit: deliveryLimit,
                messageTTL: Int(delay.components.seconds * 1000), deadLetterStrategy: .atLeastOnce, overflow: .rejectPublish)
        }
        let deadLetterQueue = QueueSpec(
            name: service.deadLetterQueue, deliveryLimit: deadLetterQueueDeliveryLimit, overflow: .rejectPublish)
        return Topology(
            exchanges: ServiceName.allCases.map { ExchangeSpec(name: $0.exchange) } + [
                ExchangeSpec(name: service.retryExchange, kind: .direct),
                ExchangeSpec(name: service.deadLetterExchange, kind: .direct),
            ],
            queues: [workQueue] + retryQueues + [deadLetterQueue],
            bindings: bindings
                + retryQueues.map { BindingSpec(queue: $0.name, exchange: service.retryExchange, routingKey: $0.name) }
                + [
                    // Expired retries come back to the work queue through the retry exchange.
                    BindingSpec(queue: service.queue, exchange: service.retryExchange, routingKey: service.queue),
                    BindingSpec(queue: service.deadLetterQueue, exchange: service.deadLetterExchange, routingKey: service.deadLetterQueue),
                ])
    }
}
