import Foundation

/// One step of a schema's history: SQL applied once, in version order, and never edited after.
public struct Migration: Sendable, Equatable {
    /// Orders the migrations and identifies each in `schema_migrations`.
    public var version: Int
    /// A description for people, from the file name (`0001_create_orders.sql` → `create_orders`).
    public var name: String
    /// Statements to run; several may be separated by semicolons.
    public var sql: String

    public init(version: Int, name: String, sql: String) {
        self.version = version
        self.name = name
        self.sql = sql
    }

    /// FNV-1a (64-bit) of the SQL's UTF-8 bytes, in hex: recorded when the migration is applied,
    /// so an edit made afterwards is noticed. It catches accidents, not tampering — it is not a
    /// cryptographic hash (Foundation has none on Linux, and nothing here needs one).
    public var checksum: String { FNV1a64.hex(of: Array(sql.utf8)) }
}

/// Loading migrations from the files a service ships.
public enum Migrations {
    /// Reads every `.sql` file in `directory`, named `<version>_<name>.sql` (`0001_create_orders.sql`),
    /// sorted by version. Other files are ignored. Throws `MigrationError` for an `.sql` file with
    /// another name shape, or two files with the same version.
    public static func load(from directory: URL) throws -> [Migration] {
        let files: [URL]
        do {
            files = try FileManager.default.contentsOfDirectory(
                at: directory, includingPropertiesForKeys: nil, options: [.skipsHiddenFiles])
        } catch {
            throw MigrationError.unreadable(path: directory.path, reason: "\(error)")
        }
        var migrations: [Migration] = []
        var fileByVersion: [Int: String] = [:]
        for file in files.sorted(by: { $0.lastPathComponent < $1.lastPathComponent })
        where file.pathExtension == "sql" {
            let fileName = file.lastPathComponent
            let (version, name) = try parse(fileName: fileName)
            if let other = fileByVersion[version] {
                throw MigrationError.duplicateVersion(version, files: [other, fileName])
            }
            fileByVersion[version] = fileName
            let sql: String
            do {
                sql = try String(contentsOf: file, encoding: .utf8)
            } catch {
                throw MigrationError.unreadable(path: file.path, reason: "\(error)")
            }
            migrations.append(Migration(version: version, name: name, sql: sql))
        }
        return migrations.sorted { $0.version < $1.version }
    }

    /// `0001_create_orders.sql` → (1, "create_orders"): digits (a version from 1 to 2^31-1), an
    /// underscore, then letters, digits and underscores.
    static func parse(fileName: String) throws -> (version: Int, name: String) {
        let stem = fileName.dropLast(".sql".count)
        guard let underscore = stem.firstIndex(of: "_") else {
            throw MigrationError.badFileName(fileName)
        }
        let digits = stem[..<underscore]
        let name = stem[stem.index(after: underscore)...]
        let nameCharacters = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
        guard !digits.isEmpty, digits.allSatisfy(\.isASCII), digits.allSatisfy(\.isNumber),
            let version = Int(digits), (1...Int(Int32.max)).contains(version),  // the column is int
            !name.isEmpty, name.allSatisfy(nameCharacters.contains)
        else { throw MigrationError.badFileName(fileName) }
        return (version, String(name))
    }
}

/// Why migrations could not be loaded or applied.
public enum MigrationError: Error, Sendable, Equatable, CustomStringConvertible {
    /// An `.sql` file not named `<version>_<name>.sql`.
    case badFileName(String)
    /// Two files claim the same version.
    case duplicateVersion(Int, files: [String])
    /// The directory or a file could not be read.
    case unreadable(path: String, reason: String)
    /// An applied migration's SQL has changed since. Applied migrations are history: write a new
    /// migration instead of editing an old one.
    case checksumMismatch(version: Int, name: String, applied: String, current: String)
    /// A migration's SQL ended the runner's transaction (it contains COMMIT or ROLLBACK).
    case endedTransaction(version: Int, name: String)

    public var description: String {
        switch self {
        case .badFileName(let file):
            "migration file '\(file)' is not named <version>_<name>.sql (for example 0001_create_orders.sql; "
                + "the version a number from 1 to 2147483647, the name letters, digits and underscores)"
        case .duplicateVersion(let version, let files):
            "migration version \(version) is used by more than one file: \(files.joined(separator: ", "))"
        case .unreadable(let path, let reason):
            "cannot read migrations at \(path): \(reason)"
        case .checksumMismatch(let version, let name, let applied, let current):
            "migration \(version) (\(name)) was edited after it was applied (checksum \(applied), now \(current)); "
                + "add a new migration instead"
        case .endedTransaction(let version, let name):
            "migration \(version) (\(name)) ended the transaction; migrations must not contain COMMIT or ROLLBACK"
        }
    }
}

/// FNV-1a, 64-bit: a tiny, stable, non-cryptographic hash.
enum FNV1a64 {
    static func hex(of bytes: [UInt8]) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes {
            hash ^= UInt64(byte)
            hash &*= 0x0000_0100_0000_01b3
        }
        let digits = String(hash, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}
