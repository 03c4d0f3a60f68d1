import Foundation

/// Where the integration tests find the local stack.
///
/// Each setting comes from the process environment first (so CI or a developer can point the
/// tests anywhere), then from `.run/stack.env`, which `scripts/stack.sh up` writes. A test that
/// needs the stack and finds neither fails with a message that says how to start it.
public enum StackEnvironment {
    /// `AMQP_URL`: the broker, with admin credentials.
    public static var amqpURL: String { get throws { try value(of: "AMQP_URL") } }
    /// `AMQPS_URL`: the broker over TLS, with the stack's throw-away CA as `cacertfile`.
    public static var amqpsURL: String { get throws { try value(of: "AMQPS_URL") } }
    /// `DATABASE_URL`: the database, with admin credentials.
    public static var databaseURL: String { get throws { try value(of: "DATABASE_URL") } }
    /// `RABBITMQCTL`: a rabbitmqctl bound to the stack's node.
    public static var rabbitmqctl: String { get throws { try value(of: "RABBITMQCTL") } }

    public struct Missing: Error, CustomStringConvertible {
        public let key: String
        public var description: String {
            "\(key) is not set and .run/stack.env does not name it: start the local stack with `make test` "
                + "(or `scripts/stack.sh up`), or export \(key)."
        }
    }

    public static func value(of key: String) throws -> String {
        if let value = ProcessInfo.processInfo.environment[key], !value.isEmpty { return value }
        if let value = stackFile[key] { return value }
        throw Missing(key: key)
    }

    /// The repository's root, found from this source file's location (Tests/TestSupport/…).
    public static let repositoryRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    private static let stackFile: [String: String] = {
        let runDirectory = ProcessInfo.processInfo.environment["BAZAAR_RUN_DIR"].map { URL(fileURLWithPath: $0) }
            ?? repositoryRoot.appendingPathComponent(".run")
        let url = runDirectory.appendingPathComponent("stack.env")
        guard let text = try? String(contentsOf: url, encoding: .utf8) else { return [:] }
        var values: [String: String] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let equals = line.firstIndex(of: "=") else { continue }
            values[String(line[..<equals])] = String(line[line.index(after: equals)...])
        }
        return values
    }()

    /// Runs a command of the stack (for example rabbitmqctl) and returns its standard output;
    /// throws when it exits non-zero.
    @discardableResult
    public static func run(_ executable: String, _ arguments: [String], environment: [String: String]? = nil) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let environment { process.environment = environment }
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        guard process.terminationStatus == 0 else {
            throw CommandFailed(command: ([executable] + arguments).joined(separator: " "), output: text)
        }
        return text
    }

    public struct CommandFailed: Error, CustomStringConvertible {
        public let command: String
        public let output: String

        public init(command: String, output: String) {
            self.command = command
            self.output = output
        }

        public var description: String { "`\(command)` failed: \(output)" }
    }
}
