import AMQP
import Auth
import Foundation
import Logging
import Postgres
import TestSupport
import Testing

/// The HTTP APIs' authentication and authorization, against the running services.
@Suite("API security", .serialized, .timeLimit(.minutes(2)))
struct SecurityTests {
    @Test func withoutAValidTokenEveryCallIsRefusedWith401AndChangesNothing() async throws {
        try await withSystem(start: [.order, .inventory]) { system in
            let orders = "\(system.url(.order))/orders"
            let forged = try await TokenAuthority(secret: String(repeating: "x", count: 32)).issue(for: .admin)
            let expired = try await TokenAuthority(secret: TestTokens.secret).issue(for: .admin, lifetime: .seconds(1))
            try await Task.sleep(for: .seconds(2))
            for bearer in [Bearer.none, .raw("not-a-token"), .raw(forged), .raw(expired)] {
                let (status, contentType, json) = try await HTTP.exchange(
                    "POST", orders, body: Data(#"{"customerId":"alice","items":[{"sku":"MUG-01","quantity":1}]}"#.utf8), as: bearer)
                #expect(status == 401, "\(bearer)")
                #expect(contentType == "application/problem+json")
                #expect((json as? [String: Any])?["status"] as? Int == 401)
                #expect(try await HTTP.get("\(orders)?customerId=alice", as: bearer).0 == 401)
                #expect(try await HTTP.put("\(system.url(.inventory))/products/MUG-01", json: ["name": "m", "price": 1, "stock": 1], as: bearer).0 == 401)
            }
            #expect(try await system.pool.query("SELECT count(*) FROM \(system.schema(.order)).orders").first!.decode(Int.self, at: 0) == 0)
            #expect(try await system.pool.query("SELECT count(*) FROM \(system.schema(.inventory)).products").first!.decode(Int.self, at: 0) == 0)
            // Reading the catalogue and health need no token.
            #expect(try await HTTP.get("\(system.url(.inventory))/products", as: .none).0 == 200)
            #expect(try await HTTP.get("\(system.url(.order))/health/ready", as: .none).0 == 200)
        }
    }

    @Test func aCustomerSeesAndCancelsOnlyTheirOwnOrdersAndOthersLookNotFound() async throws {
        try await withSystem { system in
            let shop = Shop(system)
            try await shop.product("MUG-01", price: 1250, stock: 10)
            try await shop.account("alice", balance: 10_000)
            let (status, placed) = try await shop.place("alice", ["MUG-01": 1])
            #expect(status == 202)
            let id = try #require(placed["orderId"] as? String)
            let order = "\(system.url(.order))/orders/\(id)"

            #expect(try await HTTP.get(order, as: .customer("alice")).0 == 200)
            #expect(try await HTTP.get(order, as: .customer("bob")).0 == 404)
            #expect(try await HTTP.post("\(order)/cancel", json: nil, as: .customer("bob")).0 == 404)
            #expect(try await HTTP.get("\(system.url(.order))/orders?customerId=alice", as: .customer("bob")).0 == 404)
            let (_, own) = try await HTTP.get("\(system.url(.order))/orders", as: .customer("alice"))
            #expect((own as? [[String: Any]])?.map { $0["orderId"] as? String } == [id])
            // Nor may bob order in alice's name.
            let (refused, _) = try await HTTP.post(
                "\(system.url(.order))/orders", json: ["customerId": "alice", "items": [["sku": "MUG-01", "quantity": 1]]],
                as: .customer("bob"))
            #expect(refused == 403)
            #expect(try await HTTP.get("\(system.url(.payment))/accounts/alice", as: .customer("bob")).0 == 404)
            // Payments and notifications of alice's order: hers to see, not bob's.
            _ = try await shop.waitUntilSettled(id)
            for url in ["\(system.url(.payment))/payments?orderId=\(id)", "\(system.url(.notification))/notifications?orderId=\(id)"] {
                try await shop.eventually { (try await HTTP.get(url, as: .customer("alice")).1 as? [Any])?.isEmpty == false }
                let (status, seenByBob) = try await HTTP.get(url, as: .customer("bob"))
                #expect(status == 200 && (seenByBob as? [Any])?.isEmpty == true, "\(url): \(seenByBob ?? "")")
            }

            // Bob's attempt changed nothing; alice's order goes on, and she may cancel it; the admin may read it.
            #expect(try await shop.waitUntilSettled(id)["status"] as? String == "confirmed")
            #expect(try await HTTP.post("\(order)/cancel", json: nil, as: .customer("alice")).0 == 202)
            #expect(try await HTTP.get(order, as: .admin).0 == 200)
        }
    }

    @Test func backOfficeChangesNeedAnAdminToken() async throws {
        try await withSystem(start: [.inventory, .payment]) { system in
            let product = "\(system.url(.inventory))/products/MUG-01", account = "\(system.url(.payment))/accounts/alice"
            let mug: [String: Any] = ["name": "Mug", "price": 1, "stock": 5]
            let (productByCustomer, _) = try await HTTP.put(product, json: mug, as: .customer("alice"))
            let (accountByCustomer, _) = try await HTTP.put(account, json: ["balance": 1_000_000], as: .customer("alice"))
            #expect(productByCustomer == 403 && accountByCustomer == 403)
            let (unchanged, _) = try await HTTP.get(product, as: .none)
            #expect(unchanged == 404, "the refused PUT created the product")

            let (productByAdmin, _) = try await HTTP.put(product, json: mug, as: .admin)
            let (accountByAdmin, _) = try await HTTP.put(account, json: ["balance": 100], as: .admin)
            #expect(productByAdmin == 200 && accountByAdmin == 200)
            let (ownAccount, _) = try await HTTP.get(account, as: .customer("alice"))
            #expect(ownAccount == 200)
        }
    }

    /// amqps:// with the stack's CA, and Postgres with sslmode=verify-full: a whole saga over TLS.
    @Test func theServicesRunOverTLSToTheBrokerAndTheDatabase() async throws {
        let system = try await RunningSystem()
        var amqps = try #require(URLComponents(string: try StackEnvironment.amqpsURL))
        amqps.percentEncodedPath = URLComponents(string: system.vhost.amqpURL)!.percentEncodedPath
        system.extraEnvironment = ["AMQP_URL": amqps.string!, "DATABASE_URL": try StackEnvironment.value(of: "DATABASE_TLS_URL")]
        do {
            try await system.start()
            let shop = Shop(system)
            try await shop.product("MUG-01", price: 1250, stock: 10)
            try await shop.account("alice", balance: 10_000)
            let id = try #require(try await shop.place("alice", ["MUG-01": 1]).1["orderId"] as? String)
            #expect(try await shop.waitUntilSettled(id)["status"] as? String == "confirmed")

            let plain = try await system.pool.query(
                "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.application_name LIKE $1 AND NOT s.ssl",
                "%\(system.suffix)%").first!.decode(Int.self, at: 0)
            let encrypted = try await system.pool.query(
                "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.application_name LIKE $1 AND s.ssl",
                "%\(system.suffix)%").first!.decode(Int.self, at: 0)
            #expect(plain == 0 && encrypted > 0, "\(plain) plain and \(encrypted) TLS database sessions")
            let connections = try StackEnvironment.run(
                try StackEnvironment.rabbitmqctl, ["-q", "list_connections", "--no-table-headers", "vhost", "ssl"])
            let ours = connections.split(separator: "\n").filter { $0.hasPrefix(system.vhost.name) }
            #expect(!ours.isEmpty && ours.allSatisfy { $0.hasSuffix("true") }, "\(ours)")
        } catch {
            await system.tearDown()
            throw error
        }
        await system.tearDown()
    }

    /// The services run as the deployment's broker users. Another service's user can't publish
    /// to the payments exchange at all; what it may publish on its own exchange, and what the
    /// admin publishes anywhere, carry their own `user-id` — never payment's — and are parked.
    @Test func aPaymentCapturedForgedByAnotherUserNeverConfirmsAnOrder() async throws {
        let system = try await RunningSystem(serviceUsers: true)
        do {
            try await system.start()
            let shop = Shop(system)
            try await shop.product("MUG-01", price: 1250, stock: 10)
            try await shop.account("alice", balance: 10_000)
            system.stop(.inventory)  // the order stays pending: nothing real will answer it
            let (_, placed) = try await shop.place("alice", ["MUG-01": 1])
            let orderId = try #require(placed["orderId"] as? String)
            func forged() -> [UInt8] {
                Array(
                    """
                    {"eventId":"\(UUID())","type":"PaymentCaptured","version":1,"occurredAt":"2026-11-23T20:36:01.123Z",\
                    "correlationId":"\(orderId)","source":"payment",\
                    "data":{"orderId":"\(orderId)","paymentId":"\(UUID())","customerId":"alice","amount":1250}}
                    """.utf8)
            }
            let logger = Logger(label: "e2e")
            let inventory = try await AMQPConnection.connect(
                try AMQPConfiguration(url: try system.users!.amqpURL(of: "inventory")), logger: logger)
            await #expect(throws: AMQPError.self, "inventory's user published to the payments exchange") {
                try await inventory.publish(
                    OutgoingMessage(
                        exchange: "payments", routingKey: "payment.captured.v1", body: forged(),
                        properties: AMQPProperties(userId: inventory.user)))
            }
            // Its own exchange and a routing key it may use, which order consumes.
            try await inventory.publish(
                OutgoingMessage(
                    exchange: "inventory", routingKey: "stock.rejected.v1", body: forged(),
                    properties: AMQPProperties(userId: inventory.user)))
            await inventory.close()
            let admin = try await AMQPConnection.connect(try AMQPConfiguration(url: system.vhost.amqpURL), logger: logger)
            try await admin.publish(
                OutgoingMessage(
                    exchange: "payments", routingKey: "payment.captured.v1", body: forged(),
                    properties: AMQPProperties(userId: admin.user)))

            try await shop.eventually { try await admin.queueStatus("order.dlq").messages == 2 }
            await admin.close()
            #expect(try await shop.order(orderId)["status"] as? String == "pending")
            #expect(try await system.pool.query(
                "SELECT count(*) FROM \(system.schema(.order)).inbox WHERE event_type = 'PaymentCaptured'").first!.decode(Int.self, at: 0) == 0)
            #expect(system.log(of: .order).contains("untrusted_source"))
        } catch {
            await system.tearDown()
            throw error
        }
        await system.tearDown()
    }

    @Test func anOversizedBodyIsRefusedWith413() async throws {
        try await withSystem(start: [.order]) { system in
            let padding = String(repeating: " ", count: 70_000)
            let body = Data("{\"customerId\":\"alice\",\"items\":[{\"sku\":\"MUG-01\",\"quantity\":1}]\(padding)}".utf8)
            let (status, contentType, _) = try await HTTP.exchange("POST", "\(system.url(.order))/orders", body: body)
            #expect(status == 413)
            #expect(contentType == "application/problem+json")
        }
    }
}

/// Passwords and keys travel in URLs and the environment; none may reach a log line.
@Suite("Secrets in logs", .serialized, .timeLimit(.minutes(2)))
struct SecretsInLogsTests {
    @Test func noPasswordOrTokenKeyAppearsInTheServicesLogs() async throws {
        let id = UUID().uuidString.prefix(8).lowercased()
        let (brokerUser, brokerPassword) = ("secrets-\(id)", "broker-pw-\(UUID().uuidString)")
        let (databaseRole, databasePassword) = ("secrets_\(id)", "db-pw-\(UUID().uuidString)")
        let system = try await RunningSystem()
        let rabbitmqctl = try StackEnvironment.rabbitmqctl
        do {
            // Credentials of their own, so that anything found in the logs can only come from here.
            try StackEnvironment.run(rabbitmqctl, ["-q", "add_user", brokerUser, brokerPassword])
            try StackEnvironment.run(rabbitmqctl, ["-q", "set_permissions", "-p", system.vhost.name, brokerUser, ".*", ".*", ".*"])
            _ = try await system.pool.execute("CREATE ROLE \(databaseRole) LOGIN SUPERUSER PASSWORD '\(databasePassword)'")
            var amqp = try #require(URLComponents(string: system.vhost.amqpURL))
            (amqp.user, amqp.password) = (brokerUser, brokerPassword)
            var database = try #require(URLComponents(string: try StackEnvironment.databaseURL))
            (database.user, database.password) = (databaseRole, databasePassword)
            let secrets = [brokerPassword, databasePassword, TestTokens.secret]

            // A full saga with debug logs, as the services would log it in anger.
            system.extraEnvironment = [
                "AMQP_URL": amqp.string!, "DATABASE_URL": database.string!, "LOG_LEVEL": "debug",
                "AMQP_PUBLISHER_USERS": RunningSystem.Service.allCases.map { "\($0.rawValue)=\(brokerUser)" }.joined(separator: ","),
            ]
            try await system.start()
            let shop = Shop(system)
            try await shop.product("MUG-01", price: 1250, stock: 10)
            try await shop.account("alice", balance: 10_000)
            let id = try #require(try await shop.place("alice", ["MUG-01": 1]).1["orderId"] as? String)
            _ = try await shop.waitUntilSettled(id)

            // A service that can't log in says where it is waiting for: without the password.
            var wrong = database
            wrong.password = databasePassword + "-wrong"
            let refused = try await RunningSystem.output(
                of: "order-service", environment: ["DATABASE_URL": wrong.string!, "AMQP_URL": amqp.string!, "AUTH_JWT_SECRET": TestTokens.secret],
                for: .seconds(2))
            #expect(refused.contains("waiting for the database"), "\(refused)")

            let logs = RunningSystem.Service.allCases.map { system.log(of: $0) }.joined() + refused
            #expect(logs.contains("handled"))
            for secret in secrets + [databasePassword + "-wrong"] {
                #expect(!logs.contains(secret), "a secret is in the logs")
            }
        } catch {
            await cleanUp()
            throw error
        }
        await cleanUp()

        func cleanUp() async {
            await system.tearDown()
            _ = try? StackEnvironment.run(rabbitmqctl, ["-q", "delete_user", brokerUser])
            let pool = PostgresPool(configuration: try! PostgresConfiguration(url: try! StackEnvironment.databaseURL), logger: .init(label: "e2e"))
            _ = try? await pool.execute("DROP ROLE IF EXISTS \(databaseRole)")
            await pool.shutdown()
        }
    }
}
