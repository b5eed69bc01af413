//! `vellum delete <DIR> <ID>`: deletes one vector; exit 1 if absent (nothing changes then).

use std::path::PathBuf;

use super::common::{Failure, SyncArgs, open_store};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The store.
    pub dir: PathBuf,
    /// The id of the vector.
    pub id: String,
    #[command(flatten)]
    pub sync: SyncArgs,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let store = open_store(&args.dir, args.sync.mode()?)?;
    let context = || format!("deleting {:?} from {}", args.id, args.dir.display());
    let mut tx = store.begin().map_err(|e| Failure::from_error(context(), e))?;
    let existed = tx.delete(&args.id).map_err(|e| Failure::from_error(context(), e))?;
    if !existed {
        drop(tx);
        return Err(Failure::not_found(format!(
            "no vector with id {:?} in {}",
            args.id,
            args.dir.display()
        )));
    }
    let lsn = tx.commit().map_err(|e| Failure::from_error(context(), e))?;
    // Said before the close: the delete is durable now, whatever the close meets (a full
    // disk stopping the archiver, say), and a script must not take a failed close for a
    // delete that did not happen.
    println!("deleted {:?} (commit LSN {lsn})", args.id);
    store.close().map_err(|e| {
        Failure::from_error(
            format!("closing {} (the delete is committed and durable)", args.dir.display()),
            e,
        )
    })
}
