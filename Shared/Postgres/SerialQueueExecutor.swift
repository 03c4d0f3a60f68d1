import Dispatch

/// Runs an actor's jobs on a serial `DispatchQueue` of its own.
///
/// libpq calls block their thread until the server answers. On Swift's cooperative pool (one
/// thread per core, two here) a few slow queries would stall every task in the process; on a
/// dispatch queue they only hold that queue's thread. An actor using this executor keeps the
/// compiler's isolation checking while its methods run off the pool. (`DispatchSerialQueue`,
/// which is an executor by itself on Apple platforms, does not exist on Linux.)
final class SerialQueueExecutor: SerialExecutor {
    private let queue: DispatchQueue

    init(label: String) {
        queue = DispatchQueue(label: label)
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        queue.async {
            job.runSynchronously(on: self.asUnownedSerialExecutor())
        }
    }

    func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(ordinary: self)
    }

    func checkIsolated() {
        dispatchPrecondition(condition: .onQueue(queue))
    }
}
