import Foundation
import TestSupport
import Testing

/// scripts/stack.sh, as `make run` and `make test` use it. The stack already runs (make test
/// started it), so these check that a second `up` reuses it and that what it wrote is usable.
@Suite("The local stack script")
struct StackScriptTests {
    let script = StackEnvironment.repositoryRoot.appendingPathComponent("scripts/stack.sh").path

    @Test func aSecondUpReusesTheRunningServers() throws {
        let output = try StackEnvironment.run(script, ["up"])
        #expect(output.contains("RabbitMQ already runs"))
        #expect(output.contains("PostgreSQL already runs"))
        #expect(output.contains("answers at amqp://"))
        #expect(output.contains("answers at postgres://"))
    }

    @Test func stackEnvNamesTheBrokerAndTheDatabase() throws {
        let amqp = try #require(URLComponents(string: try StackEnvironment.amqpURL))
        let database = try #require(URLComponents(string: try StackEnvironment.databaseURL))
        #expect(amqp.scheme == "amqp")
        #expect(database.scheme == "postgres")
        #expect(amqp.port != nil && database.port != nil)
        #expect(FileManager.default.isExecutableFile(atPath: try StackEnvironment.rabbitmqctl))
    }

    @Test func statusSaysBothRun() throws {
        let output = try StackEnvironment.run(script, ["status"])
        #expect(output.contains("RabbitMQ runs"))
        #expect(output.contains("PostgreSQL runs"))
    }

    @Test func anUnknownCommandIsAnErrorWithUsage() throws {
        #expect(throws: StackEnvironment.CommandFailed.self) { try StackEnvironment.run(script, ["sideways"]) }
        let help = try StackEnvironment.run(script, ["--help"])
        #expect(help.contains("BAZAAR_AMQP_PORT"))
    }
}
