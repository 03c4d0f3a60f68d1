import AMQP
import Contracts

/// The broker objects of the system, derived from the event catalogue.
///
/// For each service:
/// - its topic exchange;
/// - its quorum queue, bound to the routing key of every event it handles, with a delivery limit
///   (a message that keeps crashing consumers is dead-lettered, not looped) and dead-lettering to
///   the service's dead-letter exchange;
/// - that exchange and the dead-letter queue behind it.
///
/// Every service declares the whole of it at start-up (`system()`), not only its own part: the
/// broker keeps a message only if it reaches an existing queue, so the queues of a service's
/// consumers must exist before it publishes, whichever of them starts first. (Declaring is
/// idempotent; with per-service broker permissions, a definitions file loaded into the broker
/// takes this role.)
public enum ServiceTopology {
    /// Deliveries before the broker gives up on a message and dead-letters it. Set explicitly:
    /// RabbitMQ's default differs across versions (none before 4.0, 20 since).
    public static let defaultDeliveryLimit = 10

    /// Everything every service needs, as `EventCatalogue.subscriptions` says who consumes what.
    public static func system(deliveryLimit: Int = defaultDeliveryLimit) -> Topology {
        ServiceName.allCases.reduce(Topology()) { topology, service in
            topology.merging(
                self.topology(
                    for: service, handling: EventCatalogue.subscriptions[service, default: []].map { EventKey($0) },
                    deliveryLimit: deliveryLimit))
        }
    }

    /// One service's queue, bindings and dead-letter queue, for the events it handles.
    public static func topology(
        for service: ServiceName, handling events: [EventKey], deliveryLimit: Int = defaultDeliveryLimit
    ) -> Topology {
        let bindings = events.sorted { $0.description < $1.description }.compactMap { key -> BindingSpec? in
            guard let event = EventCatalogue.event(type: key.type, version: key.version) else { return nil }
            return BindingSpec(queue: service.queue, exchange: event.producer.exchange, routingKey: event.routingKey)
        }
        return Topology(
            exchanges: ServiceName.allCases.map { ExchangeSpec(name: $0.exchange) }
                + [ExchangeSpec(name: service.deadLetterExchange, kind: .direct)],
            queues: [
                QueueSpec(
                    name: service.queue, deadLetterExchange: service.deadLetterExchange,
                    deadLetterRoutingKey: service.deadLetterQueue, deliveryLimit: deliveryLimit),
                QueueSpec(name: service.deadLetterQueue),
            ],
            bindings: bindings + [
                BindingSpec(queue: service.deadLetterQueue, exchange: service.deadLetterExchange, routingKey: service.deadLetterQueue)
            ])
    }
}
