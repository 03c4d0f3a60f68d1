import Testing

@testable import AMQP

@Suite("AMQP configuration from URLs")
struct ConfigurationTests {
    @Test func parsesAFullURL() throws {
        let configuration = try AMQPConfiguration(url: "amqp://order:s%40cret@broker.local:5673/shop?heartbeat=15")
        #expect(configuration.host == "broker.local")
        #expect(configuration.port == 5673)
        #expect(configuration.user == "order")
        #expect(configuration.password == "s@cret")
        #expect(configuration.virtualHost == "shop")
        #expect(configuration.heartbeat == 15)
        #expect(configuration.tls == nil)
    }

    @Test func theDefaultVirtualHostIsSlash() throws {
        #expect(try AMQPConfiguration(url: "amqp://u:p@h").virtualHost == "/")
        #expect(try AMQPConfiguration(url: "amqp://u:p@h/%2f").virtualHost == "/")
        #expect(try AMQPConfiguration(url: "amqp://u:p@h").port == 5672)
    }

    @Test func amqpsTurnsOnVerifiedTLS() throws {
        let configuration = try AMQPConfiguration(url: "amqps://u:p@h?cacertfile=/ca.pem")
        #expect(configuration.port == 5671)
        #expect(configuration.tls == AMQPConfiguration.TLS(caCertificatePath: "/ca.pem"))
        let unverified = try AMQPConfiguration(url: "amqps://u:p@h?verify=verify_none")
        #expect(unverified.tls?.verifyPeer == false)
    }

    @Test(arguments: ["http://h", "amqp://h/a/b", "amqp://h?heartbeat=soon", "amqp://h?colour=blue"])
    func rejectsWhatItCannotHonour(url: String) {
        #expect(throws: AMQPError.self) { try AMQPConfiguration(url: url) }
    }

    @Test func theRedactedURLHasNoPassword() throws {
        let configuration = try AMQPConfiguration(url: "amqp://order:hunter2@h:5673/%2f")
        #expect(!configuration.redactedURL.contains("hunter2"))
        #expect(configuration.redactedURL == "amqp://order@h:5673/%2F")
    }

    @Test func backoffGrowsAndIsCapped() {
        let backoff = AMQPConfiguration.Backoff(initial: .milliseconds(100), maximum: .seconds(2))
        #expect(backoff.delay(forAttempt: 0) <= .milliseconds(120))
        #expect(backoff.delay(forAttempt: 3) >= .milliseconds(640))
        #expect(backoff.delay(forAttempt: 50) <= .milliseconds(2400))
    }

    @Test func queueArgumentsAreExplicit() {
        let queue = QueueSpec(
            name: "payment", deadLetterExchange: "payment.dlx", deadLetterRoutingKey: "payment.dlq",
            deliveryLimit: 5, messageTTL: 60_000)
        #expect(queue.arguments["x-queue-type"] == "quorum")
        #expect(queue.arguments["x-dead-letter-exchange"] == "payment.dlx")
        #expect(queue.arguments["x-dead-letter-routing-key"] == "payment.dlq")
        #expect(queue.arguments["x-delivery-limit"] == 5)
        #expect(queue.arguments["x-message-ttl"] == 60_000)
    }
}
