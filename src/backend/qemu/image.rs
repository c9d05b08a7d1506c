//! Picks the QEMU block driver for a host disk: qcow2 by its magic bytes, else raw, without
//! shelling out to qemu-img.

use super::error::QemuError;
use std::path::Path;
use tokio::io::AsyncReadExt;

/// qcow2 files start with "QFI\xfb".
const QCOW2_MAGIC: [u8; 4] = *b"QFI\xfb";

/// The image format of a disk file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// Raw bytes (also host block devices).
    Raw,
    /// qcow2.
    Qcow2,
}

impl ImageFormat {
    /// QEMU's format driver name.
    pub fn driver(self) -> &'static str {
        match self {
            ImageFormat::Raw => "raw",
            ImageFormat::Qcow2 => "qcow2",
        }
    }
}

/// The protocol driver and format of `path`: `host_device` + raw for block devices, `file` +
/// whatever the header says otherwise. A missing or unreadable file is an error here rather than
/// a QEMU error later, so the message names the path.
pub async fn probe(path: &Path) -> Result<(&'static str, ImageFormat), QemuError> {
    let shown = path.display();
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(|e| QemuError::Io(format!("cannot stat disk {shown}: {e}")))?;
    if std::os::unix::fs::FileTypeExt::is_block_device(&meta.file_type()) {
        return Ok(("host_device", ImageFormat::Raw));
    }
    if !meta.is_file() {
        return Err(QemuError::Io(format!(
            "disk {shown} is neither a file nor a block device"
        )));
    }
    let mut f = tokio::fs::File::open(path)
        .await
        .map_err(|e| QemuError::Io(format!("cannot open disk {shown}: {e}")))?;
    let mut head = [0u8; 4];
    let mut got = 0;
    while got < head.len() {
        let n = f
            .read(&mut head[got..])
            .await
            .map_err(|e| QemuError::Io(format!("cannot read disk {shown}: {e}")))?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let format = if got == 4 && head == QCOW2_MAGIC {
        ImageFormat::Qcow2
    } else {
        ImageFormat::Raw
    };
    Ok(("file", format))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn detects_qcow2_magic_raw_and_missing() {
        let dir = tempfile::tempdir().unwrap();
        let q = dir.path().join("q");
        std::fs::write(&q, b"QFI\xfb\0\0\0\x03rest").unwrap();
        let r = dir.path().join("r");
        std::fs::write(&r, vec![0u8; 4096]).unwrap();
        let short = dir.path().join("s");
        std::fs::write(&short, b"QF").unwrap();
        assert_eq!(probe(&q).await.unwrap(), ("file", ImageFormat::Qcow2));
        assert_eq!(probe(&r).await.unwrap(), ("file", ImageFormat::Raw));
        assert_eq!(probe(&short).await.unwrap(), ("file", ImageFormat::Raw));
        assert!(matches!(
            probe(&dir.path().join("none")).await,
            Err(QemuError::Io(_))
        ));
        assert!(matches!(probe(dir.path()).await, Err(QemuError::Io(_))));
    }
}
