import Foundation

/// An instance to check against a JSON Schema file.
public struct SchemaCheck: Sendable {
    public var schema: String
    public var instance: Data

    public init(schema: String, instance: Data) {
        self.schema = schema
        self.instance = instance
    }
}

/// Validates JSON against JSON Schema (draft 2020-12, formats checked) with Python's `jsonschema`,
/// the reference implementation: there is no Swift validator on our package mirror, and a schema
/// test is only as good as its validator. `make test` installs the package when it is missing.
public enum JSONSchemaValidator {
    public struct Failure: Sendable, CustomStringConvertible {
        public var index: Int
        public var message: String
        public var description: String { "#\(index): \(message)" }
    }

    /// Checks all instances in one Python process; returns the ones that fail, with the reason.
    public static func validate(_ checks: [SchemaCheck]) throws -> [Failure] {
        let input = try JSONSerialization.data(withJSONObject: checks.map {
            ["schema": $0.schema, "instance": try JSONSerialization.jsonObject(with: $0.instance)]
        })
        let script = """
            import json, sys
            from jsonschema import Draft202012Validator, FormatChecker
            for i, check in enumerate(json.load(sys.stdin)):
                schema = json.load(open(check["schema"]))
                errors = list(Draft202012Validator(schema, format_checker=FormatChecker()).iter_errors(check["instance"]))
                if errors:
                    print(json.dumps({"index": i, "message": "; ".join(e.message for e in errors)}))
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script]
        let stdin = Pipe(), stdout = Pipe(), stderr = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = stderr
        try process.run()
        stdin.fileHandleForWriting.write(input)
        try stdin.fileHandleForWriting.close()
        let output = stdout.fileHandleForReading.readDataToEndOfFile()
        let errorOutput = stderr.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw StackEnvironment.CommandFailed(
                command: "python3 (jsonschema)", output: String(decoding: errorOutput, as: UTF8.self))
        }
        return String(decoding: output, as: UTF8.self).split(separator: "\n").compactMap { line in
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                let index = object["index"] as? Int, let message = object["message"] as? String
            else { return nil }
            return Failure(index: index, message: message)
        }
    }
}
