import AMQP
import Foundation
import Logging
import Postgres
import TestSupport
import Testing

/// The local stack runs each service as its own broker user and database role, as compose does
/// (scripts/stack.sh loads deploy/rabbitmq/definitions.template.json and runs deploy/postgres/init.sh),
/// and PostgreSQL speaks TLS with a certificate from the stack's CA. Checked on the running stack
/// with the credentials stack.env gives each service.
@Suite("The local stack: least privilege and TLS", .timeLimit(.minutes(1)))
struct LeastPrivilegeTests {
    let logger = Logger(label: "local-stack-tests")

    @Test func eachServiceHasItsOwnBrokerUserAndThereIsNoGuest() throws {
        let lines = try StackEnvironment.run(try StackEnvironment.rabbitmqctl, ["-q", "list_users"]).split(separator: "\n")
        let users = Set(lines.compactMap { $0.split(separator: "\t").first.map(String.init) })
        #expect(users.isSuperset(of: ["order", "inventory", "payment", "notification"]))
        #expect(!users.contains("guest"))
        // The admin may republish a parked message with its original user-id (bazaar dlq replay).
        let admin = try #require(URLComponents(string: try StackEnvironment.amqpURL)?.user)
        #expect(lines.contains { $0.hasPrefix("\(admin)\t") && $0.contains("impersonator") })
    }

    @Test func theOrderUserMayNotPublishToThePaymentsExchange() async throws {
        let order = try await connect(as: "ORDER")
        defer { Task { await order.close() } }
        // A routing key no queue is bound to: were it allowed, nothing would reach a real queue.
        // The broker closes the channel; the publish learns it waiting for its confirm.
        await #expect { try await order.publish(OutgoingMessage(exchange: "payments", routingKey: "test.refused", body: [1])) }
            throws: { $0 is AMQPError && "\($0)".contains("403 ACCESS_REFUSED") }
    }

    @Test func thePaymentUserMayNotReadTheInventoryQueue() async throws {
        let payment = try await connect(as: "PAYMENT")
        defer { Task { await payment.close() } }
        await #expect { _ = try await payment.consume(queue: "inventory") } throws: {
            $0 is AMQPError && "\($0)".contains("403 ACCESS_REFUSED")
        }
    }

    @Test func theOrderRoleMayNotReadThePaymentsSchema() async throws {
        let order = try await PostgresConnection.connect(
            configuration: try PostgresConfiguration(url: try StackEnvironment.value(of: "ORDER_DATABASE_URL")), logger: logger)
        defer { Task { await order.close() } }
        await #expect { _ = try await order.query("SELECT * FROM payments.payments") } throws: {
            ($0 as? PostgresError)?.sqlState == "42501"  // insufficient_privilege
        }
    }

    @Test func postgresSpeaksTLSWithACertificateFromTheStacksCA() async throws {
        let url = try StackEnvironment.value(of: "DATABASE_TLS_URL")
        let configuration = try PostgresConfiguration(url: url)
        #expect(configuration.parameters["sslmode"] == "verify-full")
        let connection = try await PostgresConnection.connect(configuration: configuration, logger: logger)
        defer { Task { await connection.close() } }
        let ssl = try await connection.query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        #expect(try ssl.first?.decode(Bool.self, at: 0) == true)
    }

    @Test func postgresIsRefusedWhenTheClientTrustsAnotherCA() async throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("other-ca-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let otherCA = folder.appendingPathComponent("ca.pem").path
        try StackEnvironment.run("/usr/bin/openssl", [
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=Some other CA",
            "-keyout", folder.appendingPathComponent("ca.key").path, "-out", otherCA,
        ])
        var configuration = try PostgresConfiguration(url: try StackEnvironment.value(of: "DATABASE_TLS_URL"))
        configuration.parameters["sslrootcert"] = otherCA
        await #expect { _ = try await PostgresConnection.connect(configuration: configuration, logger: logger) } throws: {
            ($0 as? PostgresError)?.kind == .connectionFailed && "\($0)".contains("certificate verify failed")
        }
    }

    /// A connection with the service's own credentials, from stack.env's `<SERVICE>_AMQP_URL`.
    private func connect(as service: String) async throws -> AMQPConnection {
        let url = try StackEnvironment.value(of: "\(service)_AMQP_URL")
        let configuration = try AMQPConfiguration(url: url, connectionName: "local-stack-test-\(service.lowercased())")
        return try await AMQPConnection.connect(configuration, logger: logger)
    }
}
