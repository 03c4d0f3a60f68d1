import Contracts

/// Which broker user publishes each service's events: what a consumer expects in a message's
/// `user-id` property. RabbitMQ refuses a message whose `user-id` is not the user of the
/// connection publishing it, so unlike anything in the payload, a matching `user-id` proves
/// which service sent the event.
///
/// By default each service's user is named after the service, as the deployment definitions
/// and the local stack create them. `AMQP_PUBLISHER_USERS` (`order=order,payment=pay-svc,…`)
/// names others; a setup where one user runs every service (the tests' throw-away virtual hosts)
/// uses `everyone`.
public struct PublisherUsers: Sendable, Equatable {
    public private(set) var users: [ServiceName: String]

    /// Each service publishes as the user of its own name.
    public static let serviceNames = PublisherUsers(
        users: Dictionary(uniqueKeysWithValues: ServiceName.allCases.map { ($0, $0.rawValue) }))

    /// One user publishes for every service.
    public static func everyone(_ user: String) -> PublisherUsers {
        PublisherUsers(users: Dictionary(uniqueKeysWithValues: ServiceName.allCases.map { ($0, user) }))
    }

    private init(users: [ServiceName: String]) {
        self.users = users
    }

    /// Parses `service=user,…`; services not named keep their default (their own name).
    public init(parsing text: String?) throws(PublisherUsersError) {
        self = .serviceNames
        guard let text, !text.isEmpty else { return }
        for item in text.split(separator: ",") {
            let parts = item.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, let service = ServiceName(rawValue: parts[0]), !parts[1].isEmpty else {
                throw PublisherUsersError(item: String(item))
            }
            users[service] = parts[1]
        }
    }

    public func user(of service: ServiceName) -> String { users[service] ?? service.rawValue }
}

public struct PublisherUsersError: Error, CustomStringConvertible {
    public var item: String
    public var description: String {
        "\"\(item)\": expected service=user, with service one of \(ServiceName.allCases.map(\.rawValue).joined(separator: ", "))"
    }
}
