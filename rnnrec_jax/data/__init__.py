"""The data layer: event tables, raw readers, the GRU4Rec split, vocabulary, encoding.

Pure numpy/pandas; nothing here imports Kafka or JAX.
"""

from rnnrec_jax.data.encoded import EncodedSessions as EncodedSessions
from rnnrec_jax.data.encoded import encode_sessions as encode_sessions
from rnnrec_jax.data.events import EVENT_TYPES as EVENT_TYPES
from rnnrec_jax.data.events import EventLog as EventLog
from rnnrec_jax.data.events import SessionEvents as SessionEvents
from rnnrec_jax.data.events import read_purchase_labels as read_purchase_labels
from rnnrec_jax.data.events import read_split_tsv as read_split_tsv
from rnnrec_jax.data.events import session_purchase_labels as session_purchase_labels
from rnnrec_jax.data.events import write_purchase_labels as write_purchase_labels
from rnnrec_jax.data.events import write_split_tsv as write_split_tsv
from rnnrec_jax.data.paths import shared_data_dir as shared_data_dir
from rnnrec_jax.data.purchases import PurchaseInputs as PurchaseInputs
from rnnrec_jax.data.purchases import purchase_inputs as purchase_inputs
from rnnrec_jax.data.raw import read_diginetica as read_diginetica
from rnnrec_jax.data.raw import read_taobao_user_behavior as read_taobao_user_behavior
from rnnrec_jax.data.raw import read_yoochoose as read_yoochoose
from rnnrec_jax.data.raw import read_yoochoose_buys as read_yoochoose_buys
from rnnrec_jax.data.raw import read_yoochoose_clicks as read_yoochoose_clicks
from rnnrec_jax.data.split import SPLIT_PARTS as SPLIT_PARTS
from rnnrec_jax.data.split import gru4rec_split as gru4rec_split
from rnnrec_jax.data.split import read_split as read_split
from rnnrec_jax.data.split import write_split as write_split
from rnnrec_jax.data.synthetic import SyntheticConfig as SyntheticConfig
from rnnrec_jax.data.synthetic import generate_sessions as generate_sessions
from rnnrec_jax.data.vocabulary import PAD_INDEX as PAD_INDEX
from rnnrec_jax.data.vocabulary import ItemVocabulary as ItemVocabulary
from rnnrec_jax.data.vocabulary import VocabularyFullError as VocabularyFullError
