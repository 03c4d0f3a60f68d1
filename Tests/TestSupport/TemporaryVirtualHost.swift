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
