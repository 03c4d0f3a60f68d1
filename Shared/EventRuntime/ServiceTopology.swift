import AMQP
import Contracts

/// The broker objects one service needs, derived from what it publishes and what it handles.
///
/// - every service's topic exchange (publishers declare their own; consumers declare the ones
///   they bind to, so start-up order does not matter);
/// - the service's quorum queue, bound to the routing key of every event it handles, with a
///   delivery limit (a message that keeps crashing consumers is dead-lettered, not looped) and
///   dead-lettering to the service's dead-letter exchange;
/// - that exchange and the dead-letter queue behind it.
public enum ServiceTopology {
    /// Deliveries before the broker gives up on a message and dead-letters it. Set explicitly:
    /// RabbitMQ's default differs across versions (none before 4.0, 20 since).
    public static let defaultDeliveryLimit = 10

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
