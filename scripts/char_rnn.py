"""A character-level LSTM language model (chapter 002's next-character LSTM, chapter 004's CharRNN Tang poetry).

python scripts/char_rnn.py train                                   # the shipped Shakespeare passage, offline
python scripts/char_rnn.py train --text corpus.txt --max-epochs 2 --output-dir runs/c   # any UTF-8 text
python scripts/char_rnn.py train --corpus tang_poems --output-dir runs/tang              # shipped Tang poems
python scripts/char_rnn.py train --text tang.npz --seq-len 125 --batch-size 128 --lr 1e-3   # the book's data
python scripts/char_rnn.py train --resume runs/c --max-epochs 40                          # continue exactly
python scripts/char_rnn.py generate --checkpoint runs/c --prefix "the qu" --length 40
python scripts/char_rnn.py generate --checkpoint runs/tang --acrostic 春花秋月

Options of each command: python scripts/char_rnn.py train --help, python scripts/char_rnn.py generate --help
"""

import sys

from tasks.commands import run_task

if __name__ == "__main__":
    run_task("char_rnn", sys.argv[1:], description=__doc__)
