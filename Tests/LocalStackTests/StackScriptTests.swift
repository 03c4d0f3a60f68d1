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

    @Test func stackEnvGivesEachServiceItsOwnCredentialsAndOnlyItsOwnerMayReadIt() throws {
        // RABBITMQCTL is <run dir>/bin/rabbitmqctl; stack.env and secrets.env sit beside bin.
        let runDirectory = URL(fileURLWithPath: try StackEnvironment.rabbitmqctl).deletingLastPathComponent().deletingLastPathComponent()
        for file in ["stack.env", "secrets.env"] {
            let attributes = try FileManager.default.attributesOfItem(atPath: runDirectory.appendingPathComponent(file).path)
            #expect((attributes[.posixPermissions] as? Int) == 0o600, "\(file)")
        }
        for service in ["order", "inventory", "payment", "notification"] {
            let amqp = try #require(URLComponents(string: try StackEnvironment.value(of: "\(service.uppercased())_AMQP_URL")))
            let database = try #require(URLComponents(string: try StackEnvironment.value(of: "\(service.uppercased())_DATABASE_URL")))
            #expect(amqp.user == service && !(amqp.password ?? "").isEmpty)
            #expect(database.user == "bazaar_\(service)" && !(database.password ?? "").isEmpty)
        }
        // Generated as 32 random bytes in hex; the services want at least 32 bytes.
        #expect(try StackEnvironment.value(of: "AUTH_JWT_SECRET").utf8.count >= 32)
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
