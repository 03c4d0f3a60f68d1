import AMQP
import Contracts
import EventRuntime
import Foundation
import Logging
import OrderService
import PaymentService
import Postgres
import TestSupport
import Testing

/// The broker definitions and the database init script that docker compose (and anyone running
/// without the local stack's admin user) relies on: checked against the code's topology, then
/// loaded into the real broker and database and tried with the services' own credentials.
@Suite("Deployment: broker definitions and database roles", .serialized, .timeLimit(.minutes(2)))
struct DeploymentTests {
    static let deploy = StackEnvironment.repositoryRoot.appendingPathComponent("deploy")

    // MARK: RabbitMQ definitions

    @Test func theDefinitionsDeclareExactlyTheTopologyTheServicesWouldDeclare() throws {
        let definitions = try Self.definitions()
        let topology = ServiceTopology.system()

        let exchanges = Set((definitions["exchanges"] as! [[String: Any]]).map { "\($0["name"]!):\($0["type"]!)" })
        #expect(exchanges == Set(topology.exchanges.map { "\($0.name):\($0.kind.rawValue)" }))

        var queues: [String: [String: String]] = [:]
        for queue in definitions["queues"] as! [[String: Any]] {
            queues[queue["name"] as! String] = (queue["arguments"] as! [String: Any]).mapValues { "\($0)" }
        }
        var expectedQueues: [String: [String: String]] = [:]
        for queue in topology.queues {
            expectedQueues[queue.name] = queue.arguments.mapValues { value in
                switch value {
                case .string(let text): text
                case .int(let number): "\(number)"
                default: "\(value)"
                }
            }
        }
        #expect(queues == expectedQueues)

        let bindings = Set((definitions["bindings"] as! [[String: Any]]).map { "\($0["source"]!)→\($0["destination"]!):\($0["routing_key"]!)" })
        #expect(bindings == Set(topology.bindings.map { "\($0.exchange)→\($0.queue):\($0.routingKey)" }))
    }

    @Test func eachServiceUserMayOnlyWriteItsOwnExchangeAndReadItsOwnQueue() throws {
        let definitions = try Self.definitions()
        let users = (definitions["users"] as! [[String: Any]]).map { $0["name"] as! String }
        #expect(!users.contains("guest"))
        let permissions = definitions["permissions"] as! [[String: Any]]
        for service in ServiceName.allCases {
            let permission = try #require(permissions.first { $0["user"] as? String == service.rawValue })
            #expect(permission["configure"] as? String == "^$")
            let write = try Regex(permission["write"] as! String), read = try Regex(permission["read"] as! String)
            // Its own exchange, its retry exchange (failed deliveries) and its dead-letter exchange.
            let exchanges = ServiceName.allCases.flatMap { [$0.exchange, $0.retryExchange, $0.deadLetterExchange] }
            for exchange in exchanges {
                let mayWrite = [service.exchange, service.retryExchange, service.deadLetterExchange].contains(exchange)
                #expect((exchange.wholeMatch(of: write) != nil) == mayWrite, "\(service) writing \(exchange)")
            }
            // Its work queue only: not its retry queues (the broker moves messages through them) nor its DLQ.
            let queues: [String] = ServiceName.allCases.flatMap { other in
                [other.queue, other.deadLetterQueue] + ServiceTopology.retryDelays.map { ServiceTopology.retryQueue(of: other, delay: $0) }
            }
            for queue in queues {
                #expect((queue.wholeMatch(of: read) != nil) == (queue == service.queue), "\(service) reading \(queue)")
            }
        }
    }

    @Test func loadedIntoTheBrokerTheDefinitionsLetEachServiceDoItsJobAndNothingElse() async throws {
        // Into a virtual host of its own, so the test can't disturb anything else on the broker.
        let vhost = try TemporaryVirtualHost.create(prefix: "deploy-test")
        let users = try ServiceUsers.load(into: vhost)
        defer {
            vhost.delete()
            users.delete()
        }

        let order = try await connect(as: .order, users: users)
        // Its own events, on its own exchange: yes.
        try await order.publish(OutgoingMessage(exchange: "orders", routingKey: OrderPlaced.routingKey, body: [1]))
        // Another service's exchange, or another service's routing key on its own: refused.
        await #expect(throws: AMQPError.self) {
            try await order.publish(OutgoingMessage(exchange: "payments", routingKey: PaymentCaptured.routingKey, body: [2]))
        }
        await #expect(throws: AMQPError.self) {
            try await order.publish(OutgoingMessage(exchange: "orders", routingKey: "payment.captured.v1", body: [3]))
        }
        // Its retry exchange: yes; another service's: refused.
        try await order.publish(OutgoingMessage(exchange: "order.retry", routingKey: "order.retry.30s", body: [4]))
        await #expect(throws: AMQPError.self) {
            try await order.publish(OutgoingMessage(exchange: "payment.retry", routingKey: "payment.retry.1s", body: [5]))
        }
        // Its own queue: yes; another's: refused; declaring anything: refused.
        _ = try await order.consume(queue: "order")
        await #expect(throws: AMQPError.self) { _ = try await order.consume(queue: "payment") }
        await #expect(throws: AMQPError.self) { try await order.declare(Topology(queues: [QueueSpec(name: "mine")])) }
        await order.close()

        // The event it published reached inventory's queue, by the definitions' bindings.
        let inventory = try await connect(as: .inventory, users: users)
        let deliveries = try await inventory.consume(queue: "inventory")
        let first = try await within(.seconds(10)) {
            var iterator = deliveries.makeAsyncIterator()
            return try await iterator.next()
        }
        #expect(first?.body == [1])
        // A delivery sent to a retry queue comes back to the work queue once the queue's TTL expires.
        try await inventory.publish(OutgoingMessage(exchange: "inventory.retry", routingKey: "inventory.retry.1s", body: [6]))
        let retried = try await within(.seconds(10)) {
            var iterator = deliveries.makeAsyncIterator()
            return try await iterator.next()
        }
        #expect(retried?.body == [6])
        await inventory.close()
    }

    private func connect(as service: ServiceName, users: ServiceUsers) async throws -> AMQPConnection {
        let configuration = try AMQPConfiguration(url: try users.amqpURL(of: service.rawValue), connectionName: "deploy-test-\(service)")
        return try await AMQPConnection.connect(configuration, logger: Logger(label: "deploy-tests"))
    }

    /// What a service needs to build its settings.
    static let settings = ["AUTH_JWT_SECRET": String(repeating: "k", count: 32)]

    /// The definitions template (unrendered: the placeholders left in).
    static func definitions() throws -> [String: Any] {
        let text = try String(contentsOf: deploy.appendingPathComponent("rabbitmq/definitions.template.json"), encoding: .utf8)
        return try JSONSerialization.jsonObject(with: Data(text.utf8)) as! [String: Any]
    }

    // MARK: PostgreSQL roles

    @Test func theInitScriptGivesEachServiceARoleThatOwnsOnlyItsSchema() async throws {
        let admin = try PostgresConfiguration(url: try StackEnvironment.databaseURL)
        let database = "deploy_test_\(UUID().uuidString.prefix(8).lowercased())"
        let roles = ["bazaar_order", "bazaar_inventory", "bazaar_payment", "bazaar_notification"]
        let logger = Logger(label: "deploy-tests")
        let adminConnection = try await PostgresConnection.connect(configuration: admin, logger: logger)
        try await adminConnection.execute("CREATE DATABASE \(database)")
        // Roles are cluster-wide, and the local stack's services log in with these very roles:
        // the script runs with their real passwords where the stack has them, and only roles the
        // test created are dropped afterwards.
        let existing = try await adminConnection.query("SELECT rolname FROM pg_roles WHERE rolname LIKE 'bazaar\\_%'")
            .map { try $0.decode(String.self, at: 0) }
        func password(_ service: String) -> String {
            (try? StackEnvironment.value(of: "\(service.uppercased())_DATABASE_URL"))
                .flatMap { URLComponents(string: $0)?.password } ?? "test-\(service)"
        }
        defer {
            Task {
                _ = try? await adminConnection.execute("DROP DATABASE IF EXISTS \(database) WITH (FORCE)")
                for role in roles where !existing.contains(role) { _ = try? await adminConnection.execute("DROP ROLE IF EXISTS \(role)") }
                await adminConnection.close()
            }
        }

        // Run it as the postgres image would, twice: it must be safe to run again.
        var environment = ProcessInfo.processInfo.environment
        environment["POSTGRES_USER"] = admin.user
        environment["POSTGRES_DB"] = database
        environment["PGHOST"] = admin.host
        environment["PGPORT"] = "\(admin.port)"
        environment["PGPASSWORD"] = admin.password
        for service in ["order", "inventory", "payment", "notification"] {
            environment["\(service.uppercased())_DB_PASSWORD"] = password(service)
        }
        for _ in 0..<2 {
            try StackEnvironment.run("/bin/bash", [Self.deploy.appendingPathComponent("postgres/init.sh").path], environment: environment)
        }

        func configuration(_ role: String, _ password: String) -> PostgresConfiguration {
            var configuration = admin
            (configuration.user, configuration.password, configuration.database) = (role, password, database)
            return configuration
        }
        // Migrations run with the service's own role (no superuser) and create its tables.
        let orderPool = PostgresPool(configuration: configuration("bazaar_order", password("order")), logger: logger)
        let paymentPool = PostgresPool(configuration: configuration("bazaar_payment", password("payment")), logger: logger)
        defer { Task { await orderPool.shutdown(); await paymentPool.shutdown() } }
        let orderDefinition = try OrderService.definition(
            settings: try .init(service: .order, environment: Self.settings), orderSettings: try .init(environment: [:]))
        let paymentDefinition = try PaymentService.definition(settings: try .init(service: .payment, environment: Self.settings))
        try await MigrationRunner(schema: "orders", logger: logger).run(RuntimeTables.migrations + orderDefinition.migrations, on: orderPool)
        try await MigrationRunner(schema: "payments", logger: logger).run(RuntimeTables.migrations + paymentDefinition.migrations, on: paymentPool)
        try await orderPool.execute("INSERT INTO orders.catalogue (sku, name, price, revision) VALUES ('A', 'a', 1, 1)")

        // …and nothing of another service's schema is reachable.
        await #expect { _ = try await orderPool.query("SELECT * FROM payments.accounts") } throws: { error in
            (error as? PostgresError)?.sqlState == "42501"
        }
        await #expect { _ = try await paymentPool.query("SELECT * FROM orders.catalogue") } throws: { error in
            (error as? PostgresError)?.sqlState == "42501"
        }
        await #expect { try await orderPool.execute("CREATE TABLE public.sneaky (n int)") } throws: { error in
            (error as? PostgresError)?.sqlState == "42501"
        }
    }
}
