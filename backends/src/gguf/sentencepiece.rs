//! A SentencePiece `tokenizer.model` (a protobuf `ModelProto`) read far enough to convert it as
//! llama.cpp's converter does with the `sentencepiece` library: each piece's text, score and
//! type, and the normalizer's `add_dummy_prefix`. Test-only (the GGUF writer's converter).
//!
//! The fields used (`sentencepiece_model.proto`): `ModelProto.pieces = 1` (repeated
//! `SentencePiece { piece = 1: string, score = 2: float, type = 3: enum, default NORMAL }`),
//! `ModelProto.normalizer_spec = 3` (`NormalizerSpec.add_dummy_prefix = 3: bool, default
//! true`). Other fields are skipped by wire type.

/// One vocabulary entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Piece {
    /// Its text (`▁` for a space).
    pub text: String,
    /// Its score (higher merges first in BPE models).
    pub score: f32,
    /// Its type: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
    pub kind: i32,
}

/// What the converter reads from a SentencePiece model.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SentencePieceModel {
    /// The pieces in id order.
    pub pieces: Vec<Piece>,
    /// Whether the normalizer prepends a space (`▁`) to the input.
    pub add_dummy_prefix: bool,
}

/// Why a `tokenizer.model` could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tokenizer.model is not a SentencePiece model: {reason} at byte {offset}")]
pub(crate) struct ModelError {
    /// What is wrong.
    pub reason: &'static str,
    /// Where.
    pub offset: usize,
}

/// A protobuf field's value.
enum Field<'a> {
    Varint(u64),
    Fixed32([u8; 4]),
    Bytes(&'a [u8]),
    Other,
}

/// Reads protobuf fields from a message's bytes.
struct Wire<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Offset of `bytes` in the whole file, for errors.
    base: usize,
}

impl<'a> Wire<'a> {
    /// An error at the current position.
    fn error(&self, reason: &'static str) -> ModelError {
        ModelError {
            reason,
            offset: self.base + self.pos,
        }
    }

    /// A base-128 varint.
    fn varint(&mut self) -> Result<u64, ModelError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .bytes
                .get(self.pos)
                .ok_or_else(|| self.error("truncated varint"))?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.error("varint longer than 10 bytes"))
    }

    /// The next `n` bytes.
    fn take(&mut self, n: usize) -> Result<&'a [u8], ModelError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| self.error("field runs past the end"))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// The next `(field number, value, offset of the value)`, or `None` at the end.
    fn next(&mut self) -> Result<Option<(u64, Field<'a>, usize)>, ModelError> {
        if self.pos >= self.bytes.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let at = self.base + self.pos;
        let value = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Field::Other
            }
            2 => {
                let len =
                    usize::try_from(self.varint()?).map_err(|_| self.error("length too large"))?;
                Field::Bytes(self.take(len)?)
            }
            5 => {
                let b = self.take(4)?;
                Field::Fixed32([b[0], b[1], b[2], b[3]])
            }
            _ => return Err(self.error("unsupported wire type")),
        };
        Ok(Some((key >> 3, value, at)))
    }
}

/// Parses a `tokenizer.model`.
pub(crate) fn parse(bytes: &[u8]) -> Result<SentencePieceModel, ModelError> {
    let mut model = SentencePieceModel {
        pieces: Vec::new(),
        add_dummy_prefix: true,
    };
    let mut wire = Wire {
        bytes,
        pos: 0,
        base: 0,
    };
    while let Some((number, value, at)) = wire.next()? {
        match (number, value) {
            (1, Field::Bytes(message)) => model.pieces.push(piece(message, at)?),
            (3, Field::Bytes(message)) => {
                let mut spec = Wire {
                    bytes: message,
                    pos: 0,
                    base: at,
                };
                while let Some((number, value, _)) = spec.next()? {
                    if let (3, Field::Varint(v)) = (number, value) {
                        model.add_dummy_prefix = v != 0;
                    }
                }
            }
            _ => {}
        }
    }
    if model.pieces.is_empty() {
        return Err(ModelError {
            reason: "no pieces",
            offset: 0,
        });
    }
    Ok(model)
}

/// One `SentencePiece` message.
fn piece(message: &[u8], base: usize) -> Result<Piece, ModelError> {
    let mut wire = Wire {
        bytes: message,
        pos: 0,
        base,
    };
    let mut piece = Piece {
        text: String::new(),
        score: 0.0,
        kind: 1,
    };
    while let Some((number, value, at)) = wire.next()? {
        match (number, value) {
            (1, Field::Bytes(text)) => {
                piece.text = String::from_utf8(text.to_vec()).map_err(|_| ModelError {
                    reason: "a piece is not UTF-8",
                    offset: at,
                })?;
            }
            (2, Field::Fixed32(bits)) => piece.score = f32::from_le_bytes(bits),
            (3, Field::Varint(kind)) => piece.kind = i32::try_from(kind).unwrap_or(1),
            _ => {}
        }
    }
    Ok(piece)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_model_reads_as_sentencepiece_does() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../models/tiny-stories/tokenizer.model");
        let model = parse(&std::fs::read(path).unwrap()).unwrap();
        assert_eq!(model.pieces.len(), 512);
        assert!(model.add_dummy_prefix);
        let p = |i: usize| {
            (
                model.pieces[i].text.as_str(),
                model.pieces[i].score,
                model.pieces[i].kind,
            )
        };
        assert_eq!(p(0), ("<unk>", 0.0, 2));
        assert_eq!(p(1), ("<s>", 0.0, 3));
        assert_eq!(p(3), ("<0x00>", 0.0, 6));
        assert_eq!(p(260), ("he", -1.0, 1));
    }

    #[test]
    fn corrupt_models_are_errors() {
        assert!(parse(&[]).is_err());
        assert!(
            parse(&[0x0a, 0x05, 0x0a]).is_err(),
            "a piece longer than the file"
        );
        assert!(parse(&[0xff; 12]).is_err(), "an endless varint");
    }
}
