import Foundation

/// A RabbitMQ virtual host of its own for one test suite: tests that use the system's real
/// exchange names (`orders`, `payments`…) then can't disturb, or be disturbed by, anything else
/// on the broker — a running `make run` included.
public struct TemporaryVirtualHost: Sendable {
    public let name: String
    /// `AMQP_URL` pointing at this virtual host.
    public let amqpURL: String

    /// Creates the virtual host and gives the stack's admin user every permission on it.
    public static func create(prefix: String = "test") throws -> TemporaryVirtualHost {
        let name = "\(prefix)-\(UUID().uuidString.prefix(8).lowercased())"
        let rabbitmqctl = try StackEnvironment.rabbitmqctl
        var base = try require(URLComponents(string: try StackEnvironment.amqpURL))
        try StackEnvironment.run(rabbitmqctl, ["-q", "add_vhost", name])
        try StackEnvironment.run(rabbitmqctl, ["-q", "set_permissions", "-p", name, base.user ?? "guest", ".*", ".*", ".*"])
        base.percentEncodedPath = "/" + name
        return TemporaryVirtualHost(name: name, amqpURL: base.string!)
    }

    /// Deletes the virtual host and everything in it.
    public func delete() {
        _ = try? StackEnvironment.run(try StackEnvironment.rabbitmqctl, ["-q", "delete_vhost", name])
    }
}

private struct MissingValue: Error {}

private func `require`<T>(_ value: T?) throws -> T {
    guard let value else { throw MissingValue() }
    return value
}

/// The deployment's broker definitions (`deploy/rabbitmq/definitions.template.json`) loaded into
/// a temporary virtual host: the whole topology, and one user per service with exactly the
/// permissions the deployment gives it. Users are broker-wide, so they get names of the virtual
/// host's own (`<vhost>-order`…); the definitions' admin user is left out.
public struct ServiceUsers: Sendable {
    public static let services = ["order", "inventory", "payment", "notification"]
    public let vhost: TemporaryVirtualHost

    /// Imports the definitions into `vhost`.
    public static func load(into vhost: TemporaryVirtualHost) throws -> ServiceUsers {
        var definitions = try renderedDefinitions()
        definitions["vhosts"] = [["name": vhost.name]]
        for key in ["permissions", "topic_permissions", "exchanges", "queues", "bindings"] {
            definitions[key] = (definitions[key] as! [[String: Any]]).map { var item = $0; item["vhost"] = vhost.name; return item }
        }
        func renamed(_ item: [String: Any], key: String) -> [String: Any]? {
            guard let service = item[key] as? String, services.contains(service) else { return nil }
            var item = item
            item[key] = user(service, in: vhost)
            return item
        }
        definitions["users"] = (definitions["users"] as! [[String: Any]]).compactMap { renamed($0, key: "name") }
        definitions["permissions"] = (definitions["permissions"] as! [[String: Any]]).compactMap { renamed($0, key: "user") }
        definitions["topic_permissions"] = (definitions["topic_permissions"] as! [[String: Any]]).compactMap { renamed($0, key: "user") }
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("\(vhost.name).json")
        defer { try? FileManager.default.removeItem(at: file) }
        try JSONSerialization.data(withJSONObject: definitions).write(to: file)
        try StackEnvironment.run(try StackEnvironment.rabbitmqctl, ["-q", "import_definitions", file.path])
        return ServiceUsers(vhost: vhost)
    }

    /// The definitions template with test passwords, as `deploy/rabbitmq/start.sh` renders it.
    public static func renderedDefinitions() throws -> [String: Any] {
        var text = try String(
            contentsOf: StackEnvironment.repositoryRoot.appendingPathComponent("deploy/rabbitmq/definitions.template.json"),
            encoding: .utf8)
        text = text.replacingOccurrences(of: "${RABBITMQ_ADMIN_USER}", with: "deploy-test-admin")
            .replacingOccurrences(of: "${RABBITMQ_ADMIN_PASSWORD}", with: "test-admin")
        for service in services {
            text = text.replacingOccurrences(of: "${\(service.uppercased())_AMQP_PASSWORD}", with: password(service))
        }
        return try JSONSerialization.jsonObject(with: Data(text.utf8)) as! [String: Any]
    }

    public static func user(_ service: String, in vhost: TemporaryVirtualHost) -> String { "\(vhost.name)-\(service)" }
    static func password(_ service: String) -> String { "test-\(service)" }

    /// `AMQP_URL` of `service`'s own user in the virtual host.
    public func amqpURL(of service: String) throws -> String {
        var url = try require(URLComponents(string: vhost.amqpURL))
        (url.user, url.password) = (Self.user(service, in: vhost), Self.password(service))
        return url.string!
    }

    /// Deletes the users (the virtual host goes with `TemporaryVirtualHost.delete`).
    public func delete() {
        for service in Self.services {
            _ = try? StackEnvironment.run(try StackEnvironment.rabbitmqctl, ["-q", "delete_user", Self.user(service, in: vhost)])
        }
    }
}
