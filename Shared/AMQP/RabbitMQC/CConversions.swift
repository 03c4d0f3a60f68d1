import CRabbitMQ
import Foundation

// Conversions between our Swift values and librabbitmq's C structures. librabbitmq borrows every
// pointer it is given (amqp_bytes_t is a pointer and a length), so the C side of a value must
// outlive the call that uses it: an Arena owns those copies for the length of one call.

/// Owns C copies of Swift values for the duration of one librabbitmq call.
final class Arena {
    private var allocations: [UnsafeMutableRawPointer] = []

    /// Runs `body` with a fresh arena and frees everything it allocated afterwards.
    static func with<T>(_ body: (Arena) throws -> T) rethrows -> T {
        let arena = Arena()
        defer { arena.allocations.forEach { free($0) } }
        return try body(arena)
    }

    func bytes(_ value: some Collection<UInt8>) -> amqp_bytes_t {
        guard !value.isEmpty else { return amqp_bytes_t(len: 0, bytes: nil) }
        let pointer = malloc(value.count)!
        allocations.append(pointer)
        let buffer = UnsafeMutableRawBufferPointer(start: pointer, count: value.count)
        buffer.copyBytes(from: value)
        return amqp_bytes_t(len: value.count, bytes: pointer)
    }

    func bytes(_ string: String) -> amqp_bytes_t { bytes(Array(string.utf8)) }

    func table(_ table: AMQPTable) -> amqp_table_t {
        guard !table.isEmpty else { return amqp_table_t(num_entries: 0, entries: nil) }
        let entries = allocate(amqp_table_entry_t.self, count: table.count)
        // Sorted so that the same table always encodes to the same bytes.
        for (index, (key, value)) in table.sorted(by: { $0.key < $1.key }).enumerated() {
            entries[index] = amqp_table_entry_t(key: bytes(key), value: fieldValue(value))
        }
        return amqp_table_t(num_entries: Int32(table.count), entries: entries)
    }

    private func fieldValue(_ value: AMQPFieldValue) -> amqp_field_value_t {
        var field = amqp_field_value_t()
        switch value {
        case .string(let string):
            field.kind = UInt8(AMQP_FIELD_KIND_UTF8.rawValue)
            field.value.bytes = bytes(string)
        case .bool(let bool):
            field.kind = UInt8(AMQP_FIELD_KIND_BOOLEAN.rawValue)
            field.value.boolean = bool ? 1 : 0
        case .int(let int):
            field.kind = UInt8(AMQP_FIELD_KIND_I64.rawValue)
            field.value.i64 = int
        case .double(let double):
            field.kind = UInt8(AMQP_FIELD_KIND_F64.rawValue)
            field.value.f64 = double
        case .timestamp(let date):
            field.kind = UInt8(AMQP_FIELD_KIND_TIMESTAMP.rawValue)
            field.value.u64 = UInt64(max(0, date.timeIntervalSince1970))
        case .bytes(let data):
            field.kind = UInt8(AMQP_FIELD_KIND_BYTES.rawValue)
            field.value.bytes = bytes(data)
        case .table(let nested):
            field.kind = UInt8(AMQP_FIELD_KIND_TABLE.rawValue)
            field.value.table = table(nested)
        case .array(let values):
            field.kind = UInt8(AMQP_FIELD_KIND_ARRAY.rawValue)
            let entries = allocate(amqp_field_value_t.self, count: max(values.count, 1))
            for (index, value) in values.enumerated() { entries[index] = fieldValue(value) }
            field.value.array = amqp_array_t(num_entries: Int32(values.count), entries: entries)
        case .void:
            field.kind = UInt8(AMQP_FIELD_KIND_VOID.rawValue)
        }
        return field
    }

    func properties(_ properties: AMQPProperties) -> amqp_basic_properties_t {
        var c = amqp_basic_properties_t()
        var flags: UInt32 = 0
        func set(_ value: String?, _ flag: Int32, _ field: WritableKeyPath<amqp_basic_properties_t, amqp_bytes_t>) {
            guard let value else { return }
            c[keyPath: field] = bytes(value)
            flags |= UInt32(flag)
        }
        set(properties.contentType, AMQP_BASIC_CONTENT_TYPE_FLAG, \.content_type)
        set(properties.contentEncoding, AMQP_BASIC_CONTENT_ENCODING_FLAG, \.content_encoding)
        set(properties.correlationId, AMQP_BASIC_CORRELATION_ID_FLAG, \.correlation_id)
        set(properties.replyTo, AMQP_BASIC_REPLY_TO_FLAG, \.reply_to)
        set(properties.expiration, AMQP_BASIC_EXPIRATION_FLAG, \.expiration)
        set(properties.messageId, AMQP_BASIC_MESSAGE_ID_FLAG, \.message_id)
        set(properties.type, AMQP_BASIC_TYPE_FLAG, \.type)
        set(properties.userId, AMQP_BASIC_USER_ID_FLAG, \.user_id)
        set(properties.appId, AMQP_BASIC_APP_ID_FLAG, \.app_id)
        if !properties.headers.isEmpty {
            c.headers = table(properties.headers)
            flags |= UInt32(AMQP_BASIC_HEADERS_FLAG)
        }
        c.delivery_mode = properties.persistent ? 2 : 1
        flags |= UInt32(AMQP_BASIC_DELIVERY_MODE_FLAG)
        if let priority = properties.priority {
            c.priority = priority
            flags |= UInt32(AMQP_BASIC_PRIORITY_FLAG)
        }
        if let timestamp = properties.timestamp {
            c.timestamp = UInt64(max(0, timestamp.timeIntervalSince1970))
            flags |= UInt32(AMQP_BASIC_TIMESTAMP_FLAG)
        }
        c._flags = flags
        return c
    }

    private func allocate<T>(_ type: T.Type, count: Int) -> UnsafeMutablePointer<T> {
        let pointer = calloc(count, MemoryLayout<T>.stride)!
        allocations.append(pointer)
        return pointer.bindMemory(to: T.self, capacity: count)
    }
}

// MARK: - C to Swift (copies: the C memory is released with the connection's buffers)

extension amqp_bytes_t {
    var array: [UInt8] {
        guard len > 0, let bytes else { return [] }
        return Array(UnsafeRawBufferPointer(start: bytes, count: len))
    }

    var string: String { String(decoding: array, as: UTF8.self) }
}

extension amqp_table_t {
    var swiftTable: AMQPTable {
        var table: AMQPTable = [:]
        for index in 0..<Int(num_entries) {
            let entry = entries[index]
            table[entry.key.string] = entry.value.swiftValue
        }
        return table
    }
}

extension amqp_field_value_t {
    var swiftValue: AMQPFieldValue {
        switch amqp_field_value_kind_t(UInt32(kind)) {
        case AMQP_FIELD_KIND_BOOLEAN: .bool(value.boolean != 0)
        case AMQP_FIELD_KIND_I8: .int(Int64(value.i8))
        case AMQP_FIELD_KIND_U8: .int(Int64(value.u8))
        case AMQP_FIELD_KIND_I16: .int(Int64(value.i16))
        case AMQP_FIELD_KIND_U16: .int(Int64(value.u16))
        case AMQP_FIELD_KIND_I32: .int(Int64(value.i32))
        case AMQP_FIELD_KIND_U32: .int(Int64(value.u32))
        case AMQP_FIELD_KIND_I64: .int(value.i64)
        case AMQP_FIELD_KIND_U64: .int(Int64(truncatingIfNeeded: value.u64))
        case AMQP_FIELD_KIND_F32: .double(Double(value.f32))
        case AMQP_FIELD_KIND_F64: .double(value.f64)
        case AMQP_FIELD_KIND_DECIMAL:
            .double(Double(value.decimal.value) / pow(10, Double(value.decimal.decimals)))
        case AMQP_FIELD_KIND_UTF8: .string(value.bytes.string)
        case AMQP_FIELD_KIND_BYTES: .bytes(value.bytes.array)
        case AMQP_FIELD_KIND_TIMESTAMP: .timestamp(Date(timeIntervalSince1970: TimeInterval(value.u64)))
        case AMQP_FIELD_KIND_TABLE: .table(value.table.swiftTable)
        case AMQP_FIELD_KIND_ARRAY:
            .array((0..<Int(value.array.num_entries)).map { value.array.entries[$0].swiftValue })
        default: .void
        }
    }
}

extension amqp_basic_properties_t {
    var swiftProperties: AMQPProperties {
        func has(_ flag: Int32) -> Bool { _flags & UInt32(flag) != 0 }
        func string(_ flag: Int32, _ value: amqp_bytes_t) -> String? { has(flag) ? value.string : nil }
        return AMQPProperties(
            contentType: string(AMQP_BASIC_CONTENT_TYPE_FLAG, content_type),
            contentEncoding: string(AMQP_BASIC_CONTENT_ENCODING_FLAG, content_encoding),
            headers: has(AMQP_BASIC_HEADERS_FLAG) ? headers.swiftTable : [:],
            persistent: has(AMQP_BASIC_DELIVERY_MODE_FLAG) && delivery_mode == 2,
            priority: has(AMQP_BASIC_PRIORITY_FLAG) ? priority : nil,
            correlationId: string(AMQP_BASIC_CORRELATION_ID_FLAG, correlation_id),
            replyTo: string(AMQP_BASIC_REPLY_TO_FLAG, reply_to),
            expiration: string(AMQP_BASIC_EXPIRATION_FLAG, expiration),
            messageId: string(AMQP_BASIC_MESSAGE_ID_FLAG, message_id),
            timestamp: has(AMQP_BASIC_TIMESTAMP_FLAG) ? Date(timeIntervalSince1970: TimeInterval(timestamp)) : nil,
            type: string(AMQP_BASIC_TYPE_FLAG, type),
            userId: string(AMQP_BASIC_USER_ID_FLAG, user_id),
            appId: string(AMQP_BASIC_APP_ID_FLAG, app_id))
    }
}
